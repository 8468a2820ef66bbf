#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# cron and anacron: spread the daily jobs, drop the man-db job, no unattended apt runs, and
# only root may use cron and at (CIS 6.1.x).

pkg_mgr install cron anacron
anacrontab=$chroot/etc/anacrontab
[ -f "$anacrontab" ] || fail "/etc/anacrontab is missing after installing anacron"
sed -i '/^RANDOM_DELAY=/d' "$anacrontab"
sed -i '1a RANDOM_DELAY=60' "$anacrontab"
rm -f "$chroot/etc/cron.daily/man-db" "$chroot/etc/cron.weekly/man-db"
cat >"$chroot/etc/apt/apt.conf.d/02periodic" <<'CONF'
// installed by cron_config: no unattended apt runs on BOSH VMs
APT::Periodic {
  Enable "0";
};
CONF
for allow in cron.allow at.allow; do
  echo root >"$chroot/etc/$allow"
  chmod 0640 "$chroot/etc/$allow"
done
rm -f "$chroot/etc/cron.deny" "$chroot/etc/at.deny"
chmod 0600 "$chroot/etc/crontab"
chmod 0700 "$chroot"/etc/cron.{d,daily,hourly,weekly,monthly}
