#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Network and kernel hardening, applied at boot by systemd-sysctl.

install -m 0644 -o root -g root "$assets_dir/60-bosh-sysctl.conf" "$chroot/etc/sysctl.d/60-bosh-sysctl.conf"
