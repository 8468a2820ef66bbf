#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# rsyslog writes files owned by the syslog user, mode 0600 (STIG V-38518, V-38519, V-38623),
# loads kernel logging and RELP (the syslog release forwards with it).

pkg_mgr install rsyslog rsyslog-relp
run_in_chroot "$chroot" '
  getent group syslog >/dev/null || groupadd --system syslog
  getent passwd syslog >/dev/null || useradd --system --gid syslog --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin syslog
  usermod -aG adm,vcap syslog
'
cat >"$chroot/etc/rsyslog.conf" <<'CONF'
# /etc/rsyslog.conf for BOSH VMs, installed by rsyslog_config
$ModLoad imuxsock
$ModLoad imklog
module(load="omrelp")

$ActionFileDefaultTemplate RSYSLOG_TraditionalFileFormat
$RepeatedMsgReduction on

$FileOwner syslog
$FileGroup syslog
$FileCreateMode 0600
$DirCreateMode 0755
$Umask 0022

$WorkDirectory /var/spool/rsyslog
$IncludeConfig /etc/rsyslog.d/*.conf

auth,authpriv.*                 /var/log/auth.log
*.*;auth,authpriv.none          -/var/log/syslog
kern.*                          -/var/log/kern.log
CONF
mkdir -p "$chroot/var/spool/rsyslog"
cat >"$chroot/etc/logrotate.d/rsyslog" <<'CONF'
# installed by rsyslog_config: rsyslog reopens its files on SIGHUP; a restart would lose logs.
/var/log/syslog /var/log/auth.log /var/log/kern.log {
  rotate 7
  daily
  missingok
  notifempty
  delaycompress
  compress
  postrotate
    sudo kill -SIGHUP $(cat /var/run/rsyslogd.pid)
  endscript
}
CONF
run_in_chroot "$chroot" 'rsyslogd -N1 -f /etc/rsyslog.conf'
