#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The files of compilers and build tools, which the agent removes from VMs that do not compile
# packages: /var/vcap/bosh/etc/dev_tools_file_list (also the stemcell's dev_tools_file_list.txt).
# The list is written to a temp name and renamed only when every step succeeded: an unreadable
# dpkg database or a failing dpkg-query fails the stage instead of leaving an empty list.

run_in_chroot "$chroot" '
  list=/var/vcap/bosh/etc/dev_tools_file_list
  mkdir -p "$(dirname "$list")"
  tmp=$(mktemp "$list.XXXXXX")
  trap "rm -f \"$tmp\"" EXIT
  installed=$(dpkg-query -W -f="\${db:Status-Status} \${Package}\n" | awk "\$1 == \"installed\" { print \$2 }")
  tools=$(awk "
    /^(binutils|bison|build-essential|cmake|cpp|debhelper|dkms|dpkg-dev|flex|g\+\+|gcc|gettext|intltool-debian|libmpc3|make|patch|po-debconf|autoconf|automake|libtool|m4|libc6-dev|linux-libc-dev|clang|llvm)\$/ { print; next }
    /^(cpp|gcc|g\+\+|clang|llvm)-[0-9.]+(-base)?\$/ { print; next }
    /^binutils-/ { print; next }
    /^(libclang|libllvm|libobjc|libgcc|libstdc\+\+)[-0-9.]*-dev\$/ { print }
  " <<<"$installed")
  for pkg in $tools; do
    dpkg-query -L "$pkg"
  done | while read -r path; do
    # Files and links (/usr/bin/gcc is a link to gcc-14); not the directories they share.
    if [ -L "$path" ] || [ -f "$path" ]; then echo "$path"; fi
  done | sort -u >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$list"
  trap - EXIT
'
