#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Time from chrony; the agent writes the NTP servers of the deployment at run time, so only the
# behaviour is set here: step the clock on large offsets at start, keep the RTC in sync.

pkg_mgr install chrony
conf_dir=$chroot/etc/chrony/conf.d
mkdir -p "$conf_dir"
cat >"$conf_dir/bosh.conf" <<'CONF'
# installed by bosh_ntp
makestep 1 3
rtcsync
CONF
run_in_chroot "$chroot" '
  systemctl enable chrony.service
  if [ -e /lib/systemd/system/systemd-timesyncd.service ] || [ -e /usr/lib/systemd/system/systemd-timesyncd.service ]; then
    systemctl mask systemd-timesyncd.service
  fi
'
