#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# What the agent and operators read about the stemcell, in /var/vcap/bosh/etc, each without a
# trailing newline as the reference writes them: infrastructure (the IaaS), operating_system
# (debian, ubuntu), stemcell_version (the agent logs it and reports it), stemcell_git_sha1
# (the builder's commit, "+" when its tree had uncommitted changes).
#
# stemcell_git_sha1 comes from the setting of that name (`--set stemcell_git_sha1=SHA`, for
# builds from a source tarball) or else from the git checkout the stages live in.

sha=${stemcell_git_sha1:-}
if [ -z "$sha" ]; then
  source_dir=$(dirname "$(readlink -f "$0")")
  git=(git -c safe.directory='*' -C "$source_dir")
  if command -v git >/dev/null && sha=$("${git[@]}" rev-parse HEAD 2>/dev/null); then
    # Tracked files changed (as the reference tells): the sha alone would not rebuild this.
    "${git[@]}" diff --quiet HEAD -- 2>/dev/null || sha="$sha+"
  else
    fail "cannot tell the builder's git commit: $source_dir is not in a git checkout; pass --set stemcell_git_sha1=SHA (40 hex digits)"
  fi
fi
[[ $sha =~ ^[0-9a-f]{40}\+?$ ]] || fail "stemcell_git_sha1 '$sha' is not a git commit: 40 lower-case hex digits, optionally followed by +"

write_file /var/vcap/bosh/etc/infrastructure 0644 < <(printf '%s' "$stemcell_infrastructure")
write_file /var/vcap/bosh/etc/operating_system 0644 < <(printf '%s' "$stemcell_operating_system")
write_file /var/vcap/bosh/etc/stemcell_version 0644 < <(printf '%s' "$stemcell_version")
write_file /var/vcap/bosh/etc/stemcell_git_sha1 0644 < <(printf '%s' "$sha")
