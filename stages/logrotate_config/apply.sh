#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# logrotate every 15 minutes from cron (the agent reschedules it per VM with setup-logrotate.sh
# when it adds a job's rules), at low priority; wtmp and btmp rotated by size; rotation as
# root:root unless a rule says otherwise. The systemd timer (daily) and the daily cron job are
# off: one scheduler, the one the agent manages.

pkg_mgr install logrotate cron
install_file "$assets_dir/logrotate.conf" /etc/logrotate.conf 0644
install_file "$assets_dir/default_su_directive" /etc/logrotate.d/default_su_directive 0644
install_file "$assets_dir/setup-logrotate.sh" /var/vcap/bosh/bin/setup-logrotate.sh 0700
install_file "$assets_dir/logrotate-cron" /usr/bin/logrotate-cron 0755
run_in_chroot "$chroot" '
  rm -f /etc/logrotate.d/btmp /etc/logrotate.d/wtmp /etc/cron.daily/logrotate
  firstMinute=0 /var/vcap/bosh/bin/setup-logrotate.sh
  if [ -e /usr/lib/systemd/system/logrotate.timer ] || [ -e /lib/systemd/system/logrotate.timer ]; then
    systemctl disable logrotate.timer
  fi
'
