#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Where the agent finds its settings on this IaaS: /var/vcap/bosh/agent.json.

source_file=$assets_dir/$stemcell_infrastructure.json
[ -f "$source_file" ] || fail "no agent settings for IaaS '$stemcell_infrastructure' (expected $source_file)"
install_file "$source_file" /var/vcap/bosh/agent.json 0644
