#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# A warden container has no systemd: runsvdir-start is its first process, and runit runs what
# systemd runs on a VM: rsyslog, sshd and cron, each in the foreground (as the reference's
# base_warden stage does), beside the agent.

for service in rsyslog ssh cron; do
  install_file "$assets_dir/$service-run" "/etc/sv/$service/run" 0755
done
run_in_chroot "$chroot" '
  [ -d /etc/service ] || { echo "the tree has no /etc/service directory: build the OS image with the bosh_monit stage" >&2; exit 1; }
  for service in rsyslog ssh cron; do ln -sfn "/etc/sv/$service" "/etc/service/$service"; done
'
