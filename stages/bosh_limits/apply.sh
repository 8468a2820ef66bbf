#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# No core dumps: they can leak secrets from job processes (STIG V-38675).

limits=$chroot/etc/security/limits.conf
[ -f "$limits" ] || fail "/etc/security/limits.conf is missing (libpam-modules not installed?)"
sed -i -E '/^\*[[:space:]]+hard[[:space:]]+core[[:space:]]/d' "$limits"
printf '*\t\thard\tcore\t\t0\n' >>"$limits"
