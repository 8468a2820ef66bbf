#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Network and kernel hardening, applied at boot by systemd-sysctl; written key=value, the form
# the reference's checks read.

install_file "$assets_dir/60-bosh-sysctl.conf" /etc/sysctl.d/60-bosh-sysctl.conf 0644
install_file "$assets_dir/60-bosh-sysctl-neigh-fix.conf" /etc/sysctl.d/60-bosh-sysctl-neigh-fix.conf 0644
