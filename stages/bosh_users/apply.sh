#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The vcap user (uid 1000) and the groups BOSH relies on: bosh_sudoers (sudo), bosh_sshers (ssh).

run_in_chroot "$chroot" '
  for group in admin adm audio cdrom dialout floppy video dip plugdev bosh_sshers bosh_sudoers; do
    getent group "$group" >/dev/null || groupadd --system "$group"
  done
  getent group vcap >/dev/null || groupadd --gid 1000 vcap
  if ! getent passwd vcap >/dev/null; then
    useradd --create-home --comment "BOSH System User" --uid 1000 --gid vcap --shell /bin/bash vcap
  fi
  usermod --groups admin,adm,audio,cdrom,dialout,floppy,video,dip,plugdev,bosh_sshers vcap
  chmod 0700 /home/vcap
  # No system group may be joined with a group password.
  sed -i "s/^\([^:]*\):[^:]*:/\1:*:/" /etc/gshadow
  # Lock files of jobs: /var/lock belongs to root and the vcap group (the reference sets it so).
  chown -h root:vcap /var/lock
  chown -L root:vcap /var/lock
  chmod 0770 /var/lock/
'
if [ -n "${bosh_users_password:-}" ]; then
  printf 'vcap:%s\nroot:%s\n' "$bosh_users_password" "$bosh_users_password" | run_in_chroot "$chroot" chpasswd
else
  run_in_chroot "$chroot" 'usermod --lock vcap && usermod --lock root'
fi

install_file "$assets_dir/00-bosh-ps1" /etc/profile.d/00-bosh-ps1 0644
run_in_chroot "$chroot" '
  for rc in /root/.bashrc /home/vcap/.bashrc /etc/skel/.bashrc; do
    touch "$rc"
    for line in "export PATH=/var/vcap/bosh/bin:\$PATH" "source /etc/profile.d/00-bosh-ps1"; do
      grep -qxF "$line" "$rc" || echo "$line" >>"$rc"
    done
  done
  chown vcap:vcap /home/vcap/.bashrc
  # Login shells of root read .bashrc too.
  grep -q .bashrc /root/.profile 2>/dev/null || echo "if [ -f ~/.bashrc ]; then . ~/.bashrc; fi" >>/root/.profile
'
