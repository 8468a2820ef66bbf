#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The journal stays in memory and hands everything to rsyslog, which owns the files on disk
# (and their rotation): /var/log is the agent's log disk, mounted after journald starts.

write_file /etc/systemd/journald.conf.d/00-override.conf 0644 <<'CONF'
# installed by journald_config
[Journal]
Storage=volatile
RuntimeMaxUse=64M
ForwardToSyslog=yes
Compress=yes
CONF
