#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The journal stays in memory and hands everything to rsyslog, which owns the files on disk
# (and their rotation); a BOSH VM's persistent logs live under /var/vcap/sys/log anyway.

mkdir -p "$chroot/etc/systemd/journald.conf.d"
cat >"$chroot/etc/systemd/journald.conf.d/00-bosh.conf" <<'CONF'
# installed by journald_config
[Journal]
Storage=volatile
RuntimeMaxUse=64M
ForwardToSyslog=yes
Compress=yes
CONF
