#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Tight modes on account databases (STIG V-38443..V-38504), setuid/setgid bits only on su,
# sudo and sudoedit (as the reference keeps them), and no world-writable files (V-38643).

run_in_chroot "$chroot" '
  chown root:root /etc/passwd /etc/group
  chmod 0644 /etc/passwd /etc/group
  for file in /etc/shadow /etc/gshadow /etc/shadow- /etc/gshadow-; do
    if [ -e "$file" ]; then
      chown root:root "$file"
      chmod 0000 "$file"
    fi
  done
  find / -xdev -type f -perm /ug=s ! \( -name su -o -name sudo -o -name sudoedit \) -exec chmod ug-s {} +
  find / -xdev -type f -perm -0002 -exec chmod o-w {} +
'
