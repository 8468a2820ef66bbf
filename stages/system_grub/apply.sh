#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# GRUB for BIOS boot; disk-image installs it onto the disk (image_disk) and writes its config.

case "$arch" in
  amd64 | i386) pkg_mgr install grub-pc ;;
  *) fail "disk images boot with BIOS GRUB, which $arch does not have" ;;
esac
install_file "$assets_dir/50-stemcell.cfg" /etc/default/grub.d/50-stemcell.cfg 0644
