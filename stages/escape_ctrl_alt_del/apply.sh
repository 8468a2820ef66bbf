#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Ctrl-Alt-Del on the console must not reboot a BOSH VM (STIG V-38668): the target is masked,
# and the key press is only logged.

mkdir -p "$chroot/etc/systemd/system"
ln -sfn /dev/null "$chroot/etc/systemd/system/ctrl-alt-del.target"
mkdir -p "$chroot/etc/systemd/system.conf.d"
cat >"$chroot/etc/systemd/system.conf.d/00-ctrl-alt-del.conf" <<'CONF'
# installed by escape_ctrl_alt_del
[Manager]
CtrlAltDelBurstAction=none
CONF
