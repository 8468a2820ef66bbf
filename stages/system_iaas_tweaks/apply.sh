#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Per-IaaS drivers in the initramfs (the root disk must be found before / is mounted) and the
# clock: the hardware clock is UTC everywhere; Azure syncs from the host's PTP clock.

case "$stemcell_infrastructure" in
  openstack) modules="virtio_pci virtio_blk virtio_scsi virtio_net" ;;
  aws) modules="nvme ena xen_blkfront xen_netfront" ;;
  google) modules="virtio_pci virtio_scsi virtio_net gve" ;;
  azure) modules="hv_vmbus hv_storvsc hv_netvsc hv_utils" ;;
  vsphere) modules="vmw_pvscsi vmxnet3 mptspi" ;;
  *) fail "no disk drivers known for $stemcell_infrastructure" ;;
esac
# Modules that are not built for this kernel are skipped by mkinitramfs with a warning.
run_in_chroot "$chroot" '
  list=/etc/initramfs-tools/modules
  for module in $1; do
    grep -qx "$module" "$list" 2>/dev/null || echo "$module" >>"$list"
  done
  printf "0.0 0 0.0\n0\nUTC\n" >/etc/adjtime
  if [ "$2" = azure ]; then
    mkdir -p /etc/chrony/conf.d
    echo "refclock PHC /dev/ptp_hyperv poll 3 dpoll -2 offset 0" >/etc/chrony/conf.d/azure-ptp.conf
  fi
  update-initramfs -u -k all
' "$modules" "$stemcell_infrastructure"
