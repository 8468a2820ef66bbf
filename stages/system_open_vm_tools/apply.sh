#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# vSphere only: VMware's guest tools (open-vm-tools: vmtoolsd reports the VM's addresses and
# lets vSphere shut it down cleanly; its unit starts on VMware only), with the NICs of
# containers and overlay networks left out of what it reports, as the reference's stemcells do.

pkg_mgr install open-vm-tools
install_file "$assets_dir/tools.conf" /etc/vmware-tools/tools.conf 0644
