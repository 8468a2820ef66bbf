#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# GRUB for the disk's firmware (the setting firmware: bios, or efi for vSphere); disk-image
# installs it onto the disk (image_disk) and writes its config.

case "$arch:${firmware:-bios}" in
  amd64:bios | i386:bios) pkg_mgr install grub-pc ;;
  # The EFI modules and grub-install/update-grub, without grub-efi-amd64's postinst, which
  # would install into the build's /boot/efi: disk-image installs onto the disk's ESP.
  amd64:efi) pkg_mgr install grub-efi-amd64-bin grub2-common ;;
  *) fail "disk images boot with BIOS GRUB on amd64/i386 or EFI GRUB on amd64, not $arch with ${firmware:-bios}" ;;
esac
install_file "$assets_dir/50-stemcell.cfg" /etc/default/grub.d/50-stemcell.cfg 0644
