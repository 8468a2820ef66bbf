#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Kernel modules a BOSH VM must never load: USB storage, Bluetooth, rare network protocols and
# file systems, IPv6. In the OS image already, so every stemcell built from it has them (the
# Azure collection lets udf load again: enable_udf_module).

install_file "$assets_dir/blacklist.conf" /etc/modprobe.d/blacklist.conf 0644
install_file "$assets_dir/blacklist-nouveau.conf" /etc/modprobe.d/blacklist-nouveau.conf 0644
run_in_chroot "$chroot" 'rm -rf /lib/modules/*/kernel/zfs /usr/src/linux-headers-*/zfs'
