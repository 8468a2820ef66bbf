#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Networking until the BOSH agent takes over: DHCP on the first NIC through systemd-networkd,
# and a neutral hostname (the agent sets the real one).

echo bosh-stemcell >"$chroot/etc/hostname"
cat >"$chroot/etc/hosts" <<'HOSTS'
127.0.0.1 localhost bosh-stemcell
::1 localhost ip6-localhost ip6-loopback
HOSTS
mkdir -p "$chroot/etc/systemd/network"
cat >"$chroot/etc/systemd/network/10-eth0.network" <<'NET'
# installed by system_network
[Match]
Name=eth0

[Network]
DHCP=ipv4
NET
run_in_chroot "$chroot" 'systemctl enable systemd-networkd.service'
