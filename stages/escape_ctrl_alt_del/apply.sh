#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Ctrl-Alt-Del on the console must not reboot a BOSH VM (STIG V-38668): the target is masked,
# and the key press is only logged.

run_in_chroot "$chroot" 'mkdir -p /etc/systemd/system && ln -sfn /dev/null /etc/systemd/system/ctrl-alt-del.target'
write_file /etc/systemd/system.conf.d/00-ctrl-alt-del.conf 0644 <<'CONF'
# installed by escape_ctrl_alt_del
[Manager]
CtrlAltDelBurstAction=none
CONF
