#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# What the agent and operators read about the stemcell, in /var/vcap/bosh/etc, each without a
# trailing newline as the reference writes them: infrastructure (the IaaS), operating_system
# (debian, ubuntu), stemcell_version (the agent logs it and reports it), stemcell_git_sha1
# (the builder's commit, "+" when its tree had uncommitted changes).
#
# stemcell_git_sha1 is a setting: the builder sets it to the commit of the git checkout the
# stages dir is in, else to the commit the builder itself was built from (an installed binary
# with its shipped stages), so it is part of this layer's key; `--set stemcell_git_sha1=SHA`
# gives it for a binary built outside a checkout.
sha=${stemcell_git_sha1:-}
[ -n "$sha" ] || fail "stemcell_git_sha1 is not set: neither the stages dir nor this binary's build is in a git checkout; pass --set stemcell_git_sha1=SHA (40 hex digits)"
[[ $sha =~ ^[0-9a-f]{40}\+?$ ]] || fail "stemcell_git_sha1 '$sha' is not a git commit: 40 lower-case hex digits, optionally followed by +"

write_file /var/vcap/bosh/etc/infrastructure 0644 < <(printf '%s' "$stemcell_infrastructure")
write_file /var/vcap/bosh/etc/operating_system 0644 < <(printf '%s' "$stemcell_operating_system")
write_file /var/vcap/bosh/etc/stemcell_version 0644 < <(printf '%s' "$stemcell_version")
write_file /var/vcap/bosh/etc/stemcell_git_sha1 0644 < <(printf '%s' "$sha")
