#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# What the stemcell build added and a VM must not carry; the agent's tree locked down.

run_in_chroot "$chroot" 'apt-get clean'
rm -rf "$chroot"/var/lib/apt/lists/*
mkdir -p "$chroot/var/lib/apt/lists/partial"
if [ -f "$chroot/etc/resolv.conf" ] && [ ! -L "$chroot/etc/resolv.conf" ]; then
  : >"$chroot/etc/resolv.conf"
fi
: >"$chroot/etc/machine-id"
rm -rf "$chroot"/tmp/* "$chroot"/var/tmp/*
find "$chroot/var/log" -type f \( -name '*.log' -o -name '*.gz' -o -name '*.[0-9]' \) -delete
chown -R root:root "$chroot/var/vcap/bosh"
chmod 0755 "$chroot/var/vcap/bosh" "$chroot/var/vcap/bosh/bin"
chmod 0700 "$chroot/var/vcap/data" "$chroot/var/vcap/store"
