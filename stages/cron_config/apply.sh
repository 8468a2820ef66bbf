#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# cron and anacron: spread the daily jobs, drop the man-db job, no unattended apt runs, and
# cron and at for vcap only, their files root's alone (CIS 9.1.2-9.1.8).

pkg_mgr install cron anacron
run_in_chroot "$chroot" '
  anacrontab=/etc/anacrontab
  [ -f "$anacrontab" ] || { echo "$anacrontab is missing after installing anacron" >&2; exit 1; }
  sed -i "/^RANDOM_DELAY=/d" "$anacrontab"
  sed -i "1a RANDOM_DELAY=60" "$anacrontab"
  rm -f /etc/cron.daily/man-db /etc/cron.weekly/man-db /etc/cron.daily/man-db.cron
  for allow in /etc/cron.allow /etc/at.allow; do
    echo vcap >"$allow"
  done
  rm -f /etc/cron.deny /etc/at.deny
  chown root:root /etc/cron.allow /etc/at.allow /etc/crontab /etc/cron.d /etc/cron.daily /etc/cron.hourly /etc/cron.weekly /etc/cron.monthly
  chmod 0600 /etc/cron.allow /etc/at.allow /etc/crontab
  chmod 0700 /etc/cron.d /etc/cron.daily /etc/cron.hourly /etc/cron.weekly /etc/cron.monthly
  systemctl enable cron.service
'
write_file /etc/apt/apt.conf.d/02periodic 0644 <<'CONF'
APT::Periodic {
  Enable "0";
}
CONF
