#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# monit and runit from the distribution, laid out where the BOSH agent expects them: the agent
# supervises monit through runit, so neither package's own service starts at boot.
#
# Debian ships no unit that runs runsvdir under systemd: runit.service is ours, where the
# reference puts it (/lib/systemd/system, reached through the merged /usr), running
# /usr/sbin/runsvdir-start as the reference's does.

pkg_mgr install monit runit
install_file "$assets_dir/monitrc" /var/vcap/bosh/etc/monitrc 0700
install_file "$assets_dir/runsvdir-start" /usr/sbin/runsvdir-start 0750
install_file "$assets_dir/runit.service" /usr/lib/systemd/system/runit.service 0644
run_in_chroot "$chroot" '
  mkdir -p /var/vcap/bosh/bin /var/vcap/monit/job
  # monit refuses to start without an include file present.
  touch /var/vcap/monit/empty.monitrc
  ln -sfn /usr/bin/monit /var/vcap/bosh/bin/monit
  # runit supervises what /etc/service holds (Debian may ship it as a link into /etc/runit).
  [ -e /etc/service ] || [ -L /etc/service ] || mkdir -p /etc/service
  if [ -e /usr/lib/systemd/system/monit.service ] || [ -e /lib/systemd/system/monit.service ]; then
    systemctl disable monit.service
  fi
  systemctl enable runit.service
'
