#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The files of compilers and build tools, which the agent removes from VMs that do not compile
# packages: /var/vcap/bosh/etc/dev_tools_file_list (also the stemcell's dev_tools_file_list.txt).

list=$chroot/var/vcap/bosh/etc/dev_tools_file_list
mkdir -p "$(dirname "$list")"
run_in_chroot "$chroot" '
  for pkg in gcc g++ cpp make binutils build-essential libc6-dev linux-libc-dev autoconf automake libtool m4 bison flex patch \
             $(dpkg-query -W -f="\${Package}\n" "gcc-[0-9]*" "g++-[0-9]*" "cpp-[0-9]*" "binutils-*" 2>/dev/null); do
    if dpkg-query -W -f="\${Status}" "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      dpkg -L "$pkg"
    fi
  done | while read -r path; do [ -f "$path" ] && [ ! -L "$path" ] && echo "$path"; done | sort -u
' >"$list"
chmod 0644 "$list"
