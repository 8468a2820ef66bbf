#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# No two VMs may share host keys: the stemcell carries none, and sshd makes its own on first
# start (the drop-in base_ssh installs; installed again for OS images built without it).

run_in_chroot "$chroot" 'if [ -d /etc/ssh ] && [ ! -L /etc/ssh ]; then rm -f /etc/ssh/ssh_host_*; fi'
install_file "$assets_dir/10-host-keys.conf" /etc/systemd/system/ssh.service.d/10-host-keys.conf 0644
