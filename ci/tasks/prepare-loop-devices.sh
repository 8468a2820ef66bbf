#!/usr/bin/env bash
# Loop devices for disk images inside a privileged container. A container's /dev is a tmpfs
# holding the nodes that existed when it started: /dev/loop-control or /dev/loopN may be
# missing, and partitions (/dev/loopNp1) that partx adds later never appear by themselves.
# The numbers come from sysfs, which shows the host's real devices.
#
#   prepare-loop-devices.sh [DEV [SYS]]          create what is missing in DEV (default /dev)
#   prepare-loop-devices.sh --watch [DEV [SYS]]  the same, then keep adding nodes for new loop
#                                                devices and partitions until killed
#
# On a devtmpfs /dev (a host, a VM) the kernel makes the nodes: only loop-control is checked.
# Any failure is one line on stderr naming what is missing and the fix.
set -euo pipefail

watch=false
if [ "${1:-}" = --watch ]; then
  watch=true
  shift
fi
dev=${1:-/dev}
sys=${2:-/sys}

die() {
  echo "prepare-loop-devices: $*" >&2
  exit 1
}

privileged_fix="run the task privileged (privileged: true on the task step, or fly execute --privileged)"

# make_node TYPE MAJOR:MINOR PATH: creates the node unless PATH exists.
make_node() {
  local type=$1 numbers=$2 path=$3
  if [ -e "$path" ] || [ -L "$path" ]; then
    return 0
  fi
  mknod -m 0660 "$path" "$type" "${numbers%%:*}" "${numbers##*:}" 2>/dev/null ||
    die "cannot create $path (mknod $type ${numbers%%:*} ${numbers##*:}): $privileged_fix"
}

# Nodes for every loop device and partition sysfs shows (loopN, loopNpM).
mirror_sysfs() {
  local entry numbers
  for entry in "$sys"/class/block/loop*; do
    [ -r "$entry/dev" ] || continue
    read -r numbers <"$entry/dev"
    make_node b "$numbers" "$dev/${entry##*/}"
  done
}

is_devtmpfs() {
  [ "$(findmnt -n -o FSTYPE --mountpoint "$dev" 2>/dev/null || true)" = devtmpfs ]
}

[ -d "$dev" ] || die "$dev is not a directory"
control=$sys/class/misc/loop-control/dev
if [ ! -e "$dev/loop-control" ]; then
  [ -r "$control" ] ||
    die "$dev/loop-control is missing and the kernel shows no loop driver ($control absent): load it on the host or worker (modprobe loop)"
  read -r numbers <"$control"
  make_node c "$numbers" "$dev/loop-control"
fi
# Opening it (no ioctl) proves the device cgroup lets us use it.
if ! (: <>"$dev/loop-control") 2>/dev/null; then
  die "cannot open $dev/loop-control: the container may not use loop devices: $privileged_fix"
fi

if ! is_devtmpfs; then
  # Devices LOOP_CTL_GET_FREE may hand out next must have nodes before the builder opens them:
  # loop0..63, whose minors are N << part_shift, the kernel's fls(max_part).
  max_part=0
  if [ -r "$sys/module/loop/parameters/max_part" ]; then
    read -r max_part <"$sys/module/loop/parameters/max_part"
  fi
  shift_bits=0
  while [ $(((1 << shift_bits) - 1)) -lt "$max_part" ]; do
    shift_bits=$((shift_bits + 1))
  done
  mirror_sysfs
  for n in $(seq 0 63); do
    make_node b "7:$((n << shift_bits))" "$dev/loop$n"
  done
fi

if $watch && ! is_devtmpfs; then
  while sleep 0.1; do
    mirror_sysfs
  done
fi
