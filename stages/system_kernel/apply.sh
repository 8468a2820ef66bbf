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
# The kernel's postinst hook and initramfs-tools' trigger would each build the initramfs (about
# 5 s apiece): update-initramfs is held (a dpkg diversion to a stub that does nothing) while the
# packages install, then put back, and the initramfs is built once. system_iaas_tweaks adds its
# modules and rebuilds it anyway.
release_initramfs() {
  run_in_chroot "$chroot" '
    case "$(dpkg-divert --truename /usr/sbin/update-initramfs)" in
      *.held)
        rm -f /usr/sbin/update-initramfs
        dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.held --remove /usr/sbin/update-initramfs
        ;;
    esac
  '
}
add_on_exit release_initramfs
run_in_chroot "$chroot" '
  dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.held --add /usr/sbin/update-initramfs
  printf "#!/bin/sh\n# held by stemcell-builder while the kernel installs\nexit 0\n" >/usr/sbin/update-initramfs
  chmod 0755 /usr/sbin/update-initramfs
'
pkg_mgr install initramfs-tools "$kernel"
release_initramfs
run_in_chroot "$chroot" '
  if ls /boot/initrd.img-* >/dev/null 2>&1; then update-initramfs -u -k all; else update-initramfs -c -k all; fi
'
run_in_chroot "$chroot" '
  ls /boot/vmlinuz-* >/dev/null 2>&1 || { echo "no kernel in /boot after installing $1" >&2; exit 1; }
  ls /boot/initrd.img-* >/dev/null 2>&1 || { echo "no initramfs in /boot after installing $1" >&2; exit 1; }
' "$kernel"
