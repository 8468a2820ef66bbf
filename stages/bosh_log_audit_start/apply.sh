#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The script the agent runs to start auditing (auditd is disabled at boot: bosh_audit).

install_file "$assets_dir/bosh-start-logging-and-auditing" /var/vcap/bosh/bin/bosh-start-logging-and-auditing 0755
