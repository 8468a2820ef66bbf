#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The static libraries in the image, for compliance scans: /var/vcap/bosh/etc/static_libraries_list.

list=$chroot/var/vcap/bosh/etc/static_libraries_list
mkdir -p "$(dirname "$list")"
run_in_chroot "$chroot" 'find /usr/lib /lib -xdev -type f -name "*.a" 2>/dev/null | sort' >"$list"
chmod 0644 "$list"
