#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The BOSH agent (--agent) at /var/vcap/bosh/bin/bosh-agent, supervised by runit, with the
# directories it owns, logrotate for what monit and the jobs write, and monit ready for it.

assert_file agent_binary
bosh=$chroot/var/vcap/bosh
[ -f "$bosh/etc/monitrc" ] || fail "the OS image has no /var/vcap/bosh/etc/monitrc: build it with the bosh_monit stage"
mkdir -p "$bosh/bin" "$bosh/log" "$chroot/var/vcap/data" "$chroot/var/vcap/store" "$chroot/var/vcap/sys/log" \
  "$chroot/var/vcap/jobs" "$chroot/var/vcap/packages" "$chroot/var/vcap/monit/job"
install -m 0755 -o root -g root "$agent_binary" "$bosh/bin/bosh-agent"

sv=$chroot/etc/sv/bosh-agent
mkdir -p "$sv/log"
install -m 0755 "$assets_dir/run" "$sv/run"
install -m 0755 "$assets_dir/log-run" "$sv/log/run"
# /etc/service is an absolute link inside the image: make the service link from inside.
run_in_chroot "$chroot" 'ln -sfn /etc/sv/bosh-agent /etc/service/bosh-agent'
install -m 0644 "$assets_dir/logrotate" "$chroot/etc/logrotate.d/bosh-agent"
chmod 0700 "$bosh/etc/monitrc"
