#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Warden only: /var/vcap/bosh/bin/unshare, an unshare with -p (a new PID namespace), which
# warden-based tests use to start the container's init as PID 1. The reference ships a binary
# of its own; util-linux's unshare in the image has had -p for a decade, so it is copied from
# the tree itself (never from the host), root's and executable.

run_in_chroot "$chroot" '
  unshare=$(command -v unshare) || { echo "the tree has no unshare: install util-linux in the OS image" >&2; exit 1; }
  unshare --help | grep -q -- "--pid" || { echo "$unshare has no --pid (-p): util-linux is too old" >&2; exit 1; }
  install -D -o root -g root -m 0755 "$unshare" /var/vcap/bosh/bin/unshare
'
