#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Every VM must get its own machine-id on first boot: the image carries an empty one.

: >"$chroot/etc/machine-id"
rm -f "$chroot/var/lib/dbus/machine-id"
