#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Networking until the BOSH agent takes over: DHCP on the first NIC through systemd-networkd,
# and a neutral hostname (the agent sets the real one).

echo bosh-stemcell | write_file /etc/hostname 0644
write_file /etc/hosts 0644 <<'HOSTS'
127.0.0.1 localhost bosh-stemcell
::1 localhost ip6-localhost ip6-loopback
HOSTS
write_file /etc/systemd/network/10-eth0.network 0644 <<'NET'
# installed by system_network
[Match]
Name=eth0

[Network]
DHCP=ipv4
NET
run_in_chroot "$chroot" 'systemctl enable systemd-networkd.service'
