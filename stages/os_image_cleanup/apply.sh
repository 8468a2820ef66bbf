#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The OS image leaves the build behind: caches, package lists, the host's resolver, logs.

remove_build_leftovers "$chroot"
run_in_chroot "$chroot" 'rm -f /var/cache/debconf/*-old /var/lib/dpkg/*-old'
