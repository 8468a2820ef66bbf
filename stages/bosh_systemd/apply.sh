#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# systemd settings BOSH jobs rely on, as drop-ins (the reference appends to logind.conf), and
# systemd-networkd on: the agent configures the network through its files (the reference's
# OS image enables it too; without a .network file it does nothing).

install_file "$assets_dir/00-bosh.conf" /etc/systemd/logind.conf.d/00-bosh.conf 0644
run_in_chroot "$chroot" 'systemctl enable systemd-networkd.service'
