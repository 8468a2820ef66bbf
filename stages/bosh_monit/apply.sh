#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# monit and runit from the distribution, laid out where the BOSH agent expects them: the agent
# supervises monit through runit, so neither package's own service starts at boot.

pkg_mgr install monit runit
mkdir -p "$chroot/var/vcap/bosh/bin" "$chroot/var/vcap/bosh/etc" "$chroot/var/vcap/monit/job"
# runit supervises what /etc/service holds (Debian may ship it as a link into /etc/runit).
[ -e "$chroot/etc/service" ] || [ -L "$chroot/etc/service" ] || mkdir -p "$chroot/etc/service"
ln -sfn /usr/bin/monit "$chroot/var/vcap/bosh/bin/monit"
cat >"$chroot/var/vcap/bosh/etc/monitrc" <<'MONITRC'
# monit for BOSH jobs; the agent talks to it on localhost:2822 (credentials are the agent's).
set daemon 10
set logfile /var/vcap/monit/monit.log
set httpd port 2822 and use address 127.0.0.1
  allow 127.0.0.1
include /var/vcap/monit/*.monitrc
include /var/vcap/monit/job/*.monitrc
MONITRC
chmod 0700 "$chroot/var/vcap/bosh/etc/monitrc"
# Debian stopped shipping a unit that runs runsvdir under systemd (runit-systemd); BOSH needs
# one: the agent's own service lives in /etc/service.
if [ ! -e "$chroot/usr/lib/systemd/system/runit.service" ] && [ ! -e "$chroot/lib/systemd/system/runit.service" ]; then
  cat >"$chroot/etc/systemd/system/runit.service" <<'UNIT'
# installed by bosh_monit: runit supervises the BOSH agent (and monit, through the agent)
[Unit]
Description=runit service supervision for BOSH
After=network.target

[Service]
ExecStart=/usr/bin/runsvdir -P /etc/service
Restart=always
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
fi
run_in_chroot "$chroot" '
  if [ -e /lib/systemd/system/monit.service ] || [ -e /usr/lib/systemd/system/monit.service ]; then
    systemctl disable monit.service
  fi
  systemctl enable runit.service
'
