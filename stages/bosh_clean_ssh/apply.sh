#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# No two VMs may share host keys: the image carries none, and sshd makes its own on first start.

rm -f "$chroot"/etc/ssh/ssh_host_*
mkdir -p "$chroot/etc/systemd/system/ssh.service.d"
cat >"$chroot/etc/systemd/system/ssh.service.d/10-host-keys.conf" <<'UNIT'
# installed by bosh_clean_ssh: host keys are made on the VM, before sshd checks its config.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
