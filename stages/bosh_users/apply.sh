#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The vcap user (uid 1000) and the groups BOSH relies on: bosh_sudoers (sudo), bosh_sshers (ssh).

groups='admin adm audio cdrom dialout floppy video dip plugdev bosh_sshers bosh_sudoers'
run_in_chroot "$chroot" "
  for group in $groups; do
    getent group \"\$group\" >/dev/null || groupadd --system \"\$group\"
  done
  getent group vcap >/dev/null || groupadd --gid 1000 vcap
  if ! getent passwd vcap >/dev/null; then
    useradd --create-home --comment 'BOSH System User' --uid 1000 --gid vcap --shell /bin/bash vcap
  fi
  usermod --groups admin,adm,audio,cdrom,dialout,floppy,video,dip,plugdev,bosh_sshers vcap
  chmod 0700 /home/vcap
  # No system group may be joined with a group password.
  sed -i 's/^\([^:]*\):[^:]*:/\1:*:/' /etc/gshadow
"
if [ -n "${bosh_users_password:-}" ]; then
  printf 'vcap:%s\nroot:%s\n' "$bosh_users_password" "$bosh_users_password" | run_in_chroot "$chroot" chpasswd
else
  run_in_chroot "$chroot" "usermod --lock vcap && usermod --lock root"
fi

install -m 0644 "$assets_dir/00-bosh-ps1" "$chroot/etc/profile.d/00-bosh-ps1"
for rc in root/.bashrc home/vcap/.bashrc etc/skel/.bashrc; do
  touch "$chroot/$rc"
  grep -qxF 'export PATH=/var/vcap/bosh/bin:$PATH' "$chroot/$rc" ||
    echo 'export PATH=/var/vcap/bosh/bin:$PATH' >>"$chroot/$rc"
  grep -qxF 'source /etc/profile.d/00-bosh-ps1' "$chroot/$rc" ||
    echo 'source /etc/profile.d/00-bosh-ps1' >>"$chroot/$rc"
done
chown 1000:1000 "$chroot/home/vcap/.bashrc"
# Login shells of root read .bashrc too.
grep -q '.bashrc' "$chroot/root/.profile" 2>/dev/null ||
  printf '%s\n' 'if [ -f ~/.bashrc ]; then . ~/.bashrc; fi' >>"$chroot/root/.profile"
