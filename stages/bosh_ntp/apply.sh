#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Time from chrony, with the deployment's NTP servers only: the agent writes them and runs
# sync-time, which makes them chrony's sources and waits for the clock to sync. Until then
# chrony has no source (no public pool from the image). chrony.conf steps the clock on large
# offsets at start (makestep 1 3, Debian's default, ensured) and keeps the RTC in sync.

pkg_mgr install chrony
install_file "$assets_dir/sync-time" /var/vcap/bosh/bin/sync-time 0755
# Debian names the unit chrony.service with the alias chronyd.service: drop-ins under the
# alias apply, and that is the name the reference uses.
install_file "$assets_dir/prevent_mount_locking.conf" /etc/systemd/system/chronyd.service.d/prevent_mount_locking.conf 0644
run_in_chroot "$chroot" '
  conf=/etc/chrony/chrony.conf
  sed -i -E "/^(pool|server) /d" "$conf"
  grep -qE "^makestep 1 3\$" "$conf" || { sed -i -E "/^makestep /d" "$conf"; echo "makestep 1 3" >>"$conf"; }
  grep -qE "^rtcsync\$" "$conf" || echo rtcsync >>"$conf"
  mkdir -p /var/vcap/bosh/log
  systemctl enable chrony.service
  if [ -e /usr/lib/systemd/system/systemd-timesyncd.service ] || [ -e /lib/systemd/system/systemd-timesyncd.service ]; then
    systemctl mask systemd-timesyncd.service
  fi
'
