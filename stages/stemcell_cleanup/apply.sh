#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# What the stemcell build added and a VM must not carry; the agent's tree locked down.

remove_build_leftovers "$chroot"
run_in_chroot "$chroot" '
  : >/etc/machine-id
  chown -R root:root /var/vcap/bosh
  chmod 0755 /var/vcap/bosh /var/vcap/bosh/bin
  chmod 0700 /var/vcap/data /var/vcap/store
'
