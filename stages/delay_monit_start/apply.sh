#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# runsvdir must not start monit before the agent has set up the VM: while the agent's run dir
# (/var/vcap/data/sys/run) is not mounted, the monit service is dropped from /etc/service; the
# agent puts it back when it bootstraps.

run_in_chroot "$chroot" '
  script=/usr/sbin/runsvdir-start
  [ -f "$script" ] || { echo "$script is missing: run bosh_monit first" >&2; exit 1; }
  line="if [ x\`mount | grep -c /var/vcap/data/sys/run\` = x0 ] ; then rm -f /etc/service/monit ; fi"
  grep -qxF "$line" "$script" || sed -i "2i $line" "$script"
'
