#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Tight modes on account databases (STIG V-38450, V-38451, V-38457, V-38502-4) and setuid/setgid
# bits only where a user needs them.

chown root:root "$chroot/etc/passwd" "$chroot/etc/group"
chmod 0644 "$chroot/etc/passwd" "$chroot/etc/group"
for file in shadow gshadow shadow- gshadow-; do
  if [ -e "$chroot/etc/$file" ]; then
    chown root:root "$chroot/etc/$file"
    chmod 0000 "$chroot/etc/$file"
  fi
done

# Keep the bit on these only; everything else loses setuid/setgid.
keep=" /usr/bin/sudo /usr/bin/su /usr/bin/passwd /usr/bin/newgrp /usr/bin/crontab "
while IFS= read -r -d '' file; do
  path=/${file#"$chroot"/}
  case "$keep" in
    *" $path "*) ;;
    *) chmod ug-s "$file" ;;
  esac
done < <(find "$chroot" -xdev -type f \( -perm -4000 -o -perm -2000 \) -print0)
