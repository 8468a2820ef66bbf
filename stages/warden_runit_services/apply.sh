#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# A warden container has no systemd: runsvdir-start is its first process, and runit runs what
# systemd runs on a VM: rsyslog, sshd and cron, each in the foreground (as the reference's
# base_warden stage does), beside the agent. Also, as the reference's base_warden:
# - rsyslog serves /dev/log itself: on a VM it reads the journal's socket, which a container
#   lacks, and the agent's syslog client would retry ten times a second forever;
# - the agent's bosh-start-logging-and-auditing starts nothing: auditd runs on the host, whose
#   kernel does the auditing (the VM script's `service auditd start` fails in a container);
# - /warden-cpi-dev, where the warden CPI bind-mounts persistent disks.

for service in rsyslog ssh cron; do
  install_file "$assets_dir/$service-run" "/etc/sv/$service/run" 0755
done
install_file "$assets_dir/bosh-start-logging-and-auditing" /var/vcap/bosh/bin/bosh-start-logging-and-auditing 0755
run_in_chroot "$chroot" '
  [ -d /etc/service ] || { echo "the tree has no /etc/service directory: build the OS image with the bosh_monit stage" >&2; exit 1; }
  for service in rsyslog ssh cron; do ln -sfn "/etc/sv/$service" "/etc/service/$service"; done
  sed -i "/^\$SystemLogSocketName /d" /etc/rsyslog.conf
  mkdir -p /warden-cpi-dev
'
