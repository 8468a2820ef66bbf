#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# What the stemcell build added and a VM must not carry; the agent's tree locked down.

remove_build_leftovers "$chroot"
: >"$chroot/etc/machine-id"
chown -R root:root "$chroot/var/vcap/bosh"
chmod 0755 "$chroot/var/vcap/bosh" "$chroot/var/vcap/bosh/bin"
chmod 0700 "$chroot/var/vcap/data" "$chroot/var/vcap/store"
