#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The OS image leaves the build behind: caches, package lists, the host's resolver, logs.

remove_build_leftovers "$chroot"
rm -f "$chroot"/var/cache/debconf/*-old "$chroot"/var/lib/dpkg/*-old
