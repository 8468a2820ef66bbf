#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Every static library in the image, for compliance scans (the agent removes them where wanted):
# /var/vcap/bosh/etc/static_libraries_list. Written to a temp name and renamed only when the
# search succeeded: a failing find fails the stage instead of leaving a short or empty list.

run_in_chroot "$chroot" '
  list=/var/vcap/bosh/etc/static_libraries_list
  mkdir -p "$(dirname "$list")"
  tmp=$(mktemp "$list.XXXXXX")
  trap "rm -f \"$tmp\"" EXIT
  find / -xdev -iname "*.a" ! -path "$tmp" | sort -u >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$list"
  trap - EXIT
'
