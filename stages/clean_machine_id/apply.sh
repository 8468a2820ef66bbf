#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Every VM must get its own machine-id on first boot: the image carries an empty one.

run_in_chroot "$chroot" ': >/etc/machine-id; rm -f /var/lib/dbus/machine-id'
