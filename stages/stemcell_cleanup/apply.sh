#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# What the stemcell build added and a VM must not carry; the agent's tree locked down.

remove_build_leftovers "$chroot"
run_in_chroot "$chroot" '
  : >/etc/machine-id
  # Groups added by the stemcell packages (udev adds input, kvm, ... with the kernel) can no
  # more be joined with a group password than those of the OS image (bosh_users locks them).
  sed -i "s/^\([^:]*\):[^:]*:/\1:*:/" /etc/gshadow
  chown -R root:root /var/vcap/bosh
  chmod 0755 /var/vcap/bosh /var/vcap/bosh/bin
  chmod 0700 /var/vcap/store
'
