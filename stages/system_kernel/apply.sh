#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# A kernel and an initramfs for VM IaaS (the disk boots them through GRUB). Debian's cloud
# kernel carries the virtio, Xen, Hyper-V and ENA/GVE drivers; vSphere gets the generic one.

case "$os_name" in
  debian)
    flavour=cloud
    if [ "$stemcell_infrastructure" = vsphere ]; then flavour=; fi
    kernel="linux-image-${flavour:+$flavour-}$arch"
    ;;
  ubuntu) kernel=linux-image-virtual ;;
  *) fail "no kernel package known for $os_name" ;;
esac
pkg_mgr install initramfs-tools "$kernel"
run_in_chroot "$chroot" '
  ls /boot/vmlinuz-* >/dev/null 2>&1 || { echo "no kernel in /boot after installing $1" >&2; exit 1; }
  ls /boot/initrd.img-* >/dev/null 2>&1 || { echo "no initramfs in /boot after installing $1" >&2; exit 1; }
' "$kernel"
