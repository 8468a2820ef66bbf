#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# GRUB for BIOS boot; disk-image installs it onto the disk (image_disk) and writes its config.

case "$arch" in
  amd64 | i386) pkg_mgr install grub-pc ;;
  *) fail "disk images boot with BIOS GRUB, which $arch does not have" ;;
esac
mkdir -p "$chroot/etc/default/grub.d"
install -m 0644 "$assets_dir/50-stemcell.cfg" "$chroot/etc/default/grub.d/50-stemcell.cfg"
