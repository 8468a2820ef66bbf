#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# bosh_sudoers members may sudo without a password; nobody else gets NOPASSWD (STIG V-58901).

cat >"$chroot/etc/sudoers" <<'SUDOERS'
# /etc/sudoers for BOSH VMs, installed by bosh_sudoers
Defaults	env_reset
Defaults	mail_badpass
Defaults	secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/var/vcap/bosh/bin"
Defaults	use_pty

root	ALL=(ALL:ALL) ALL
%bosh_sudoers ALL=(ALL) NOPASSWD: ALL

#includedir /etc/sudoers.d
SUDOERS
chown root:root "$chroot/etc/sudoers"
chmod 0440 "$chroot/etc/sudoers"
run_in_chroot "$chroot" 'visudo -c -f /etc/sudoers'
