#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# No core dumps: they can leak secrets from job processes (STIG V-38675, CIS 4.1).

run_in_chroot "$chroot" '
  limits=/etc/security/limits.conf
  [ -f "$limits" ] || { echo "$limits is missing (libpam-modules not installed?)" >&2; exit 1; }
  sed -i -E "/^\*[[:space:]]+hard[[:space:]]+core[[:space:]]/d" "$limits"
  printf "*\t\thard\tcore\t\t0\n" >>"$limits"
'
