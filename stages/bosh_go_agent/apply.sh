#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The BOSH agent (--agent) at /var/vcap/bosh/bin/bosh-agent, supervised by runit, with the
# directories it owns, logrotate for what monit and the jobs write, and monit ready for it.
# Also what the agent calls or reads beside it, where the reference puts them: bosh-agent-rc
# (run at bootstrap: device permissions), restart_networking
# (the agent runs it after writing the network configuration; a no-op on warden, whose network
# the container runtime sets up), monit's alert rule for the agent (alerts.monitrc) and the
# cache directory `bosh create-env` uploads into (/var/vcap/micro_bosh/data/cache).
# /var/vcap/data is not made: it is the ephemeral disk's mount point, which the agent creates.

assert_file agent_binary
run_in_chroot "$chroot" '
  [ -f /var/vcap/bosh/etc/monitrc ] || { echo "the OS image has no /var/vcap/bosh/etc/monitrc: build it with the bosh_monit stage" >&2; exit 1; }
  mkdir -p /var/vcap/bosh/bin /var/vcap/bosh/log /var/vcap/store /var/vcap/sys/log \
    /var/vcap/jobs /var/vcap/packages /var/vcap/monit/job /etc/sv/bosh-agent/log \
    /var/vcap/micro_bosh/data/cache
  chmod 0700 /var/vcap/bosh/etc/monitrc
'
install_file "$agent_binary" /var/vcap/bosh/bin/bosh-agent 0755
install_file "$assets_dir/run" /etc/sv/bosh-agent/run 0755
install_file "$assets_dir/log-run" /etc/sv/bosh-agent/log/run 0755
install_file "$assets_dir/logrotate" /etc/logrotate.d/bosh-agent 0644
run_in_chroot "$chroot" 'ln -sfn /etc/sv/bosh-agent /etc/service/bosh-agent'
install_file "$assets_dir/bosh-agent-rc" /var/vcap/bosh/bin/bosh-agent-rc 0755
install_file "$assets_dir/alerts.monitrc" /var/vcap/monit/alerts.monitrc 0600
restart_networking=$assets_dir/restart_networking
[ "$stemcell_infrastructure" != warden ] || restart_networking=$assets_dir/restart_networking-warden
install_file "$restart_networking" /var/vcap/bosh/bin/restart_networking 0755
