#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The programs the BOSH agent runs by name, from its Linux platform code (bosh-agent
# platform/, infrastructure/, servicemanager/; docs/conformance.md lists each with its source):
# - resolvconf: `resolvconf -u` after writing the DNS servers, on every IaaS (bootstrap stops
#   without it); the agent then links /etc/resolv.conf to /run/resolvconf/resolv.conf itself;
# - parted (parted, partprobe): the ephemeral and persistent disk partitioner agent.json names;
# - e2fsprogs (mke2fs, resize2fs), fdisk (sfdisk), udev (udevadm): formatting and finding disks;
# - iputils-arping: `arping -U` announces the VM's address after networking is set up;
# - eject: the CD-ROM settings source (vSphere) ejects the settings disc;
# - lsb-release: BOSH release job scripts call `lsb_release -cs`.
#
# resolvconf's postinst would turn /etc/resolv.conf into a link to /run/resolvconf/resolv.conf
# and copy the build host's resolv.conf (bound in while stages run) into the image: told not to,
# the file stays the image's own, and the agent makes the link when it first sets up DNS.

run_in_chroot "$chroot" 'echo "resolvconf resolvconf/linkify-resolvconf boolean false" | debconf-set-selections'
pkg_mgr install resolvconf parted e2fsprogs fdisk udev iputils-arping eject lsb-release
run_in_chroot "$chroot" '
  for tool in resolvconf parted partprobe mke2fs sfdisk udevadm arping eject lsb_release; do
    command -v "$tool" >/dev/null || { echo "$tool is missing after installing the agent tools" >&2; exit 1; }
  done
  if [ -L /etc/resolv.conf ]; then echo "/etc/resolv.conf became a link: resolvconf linkified it" >&2; exit 1; fi
'
