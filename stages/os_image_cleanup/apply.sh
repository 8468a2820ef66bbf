#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# What a build leaves behind and an image must not carry: package caches and lists, the build
# host's resolver settings, logs and temp files of the build.

run_in_chroot "$chroot" 'apt-get clean'
rm -rf "$chroot"/var/lib/apt/lists/*
mkdir -p "$chroot/var/lib/apt/lists/partial"
# The bootstrap copied the build host's resolv.conf; the VM's network setup writes its own.
if [ -f "$chroot/etc/resolv.conf" ] && [ ! -L "$chroot/etc/resolv.conf" ]; then
  : >"$chroot/etc/resolv.conf"
fi
rm -rf "$chroot"/tmp/* "$chroot"/var/tmp/*
find "$chroot/var/log" -type f \( -name '*.log' -o -name '*.gz' -o -name '*.[0-9]' \) -delete
rm -f "$chroot"/var/cache/debconf/*-old "$chroot"/var/lib/dpkg/*-old
