#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# rsyslog writes files owned by the syslog user, mode 0600 (STIG V-38518, V-38519, V-38623),
# loads kernel logging and RELP over OpenSSL (the syslog release forwards with it), logs cron
# (V-75865), waits for the agent's log disk, and rotates without losing lines.

pkg_mgr install rsyslog rsyslog-relp rsyslog-openssl logrotate
run_in_chroot "$chroot" '
  getent group syslog >/dev/null || groupadd --system syslog
  getent passwd syslog >/dev/null || useradd --system --gid syslog --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin syslog
  usermod -aG adm,vcap syslog
  # Only the builder-specified rules.
  if [ -d /etc/rsyslog.d ]; then find /etc/rsyslog.d -mindepth 1 -delete; else mkdir -p /etc/rsyslog.d; fi
  mkdir -p /var/spool/rsyslog
'
install_file "$assets_dir/rsyslog.conf" /etc/rsyslog.conf 0644
install_file "$assets_dir/50-default.conf" /etc/rsyslog.d/50-default.conf 0644
install_file "$assets_dir/logrotate" /etc/logrotate.d/rsyslog 0644
install_file "$assets_dir/wait_for_var_log_to_be_mounted" /usr/local/bin/wait_for_var_log_to_be_mounted 0755
install_file "$assets_dir/00-override.conf" /etc/systemd/system/rsyslog.service.d/00-override.conf 0644
run_in_chroot "$chroot" '
  # Every file the rules name exists, owned by syslog, 0600, before rsyslog first writes it.
  grep -h -v "^#" /etc/rsyslog.conf /etc/rsyslog.d/*.conf | grep -o "/var/log/[^[:space:]]*" | sort -u |
    while read -r file; do
      touch "$file"
      chown syslog:syslog "$file"
      chmod 0600 "$file"
    done
  rsyslogd -N1 -f /etc/rsyslog.conf
  [ -x /usr/lib/rsyslog/rsyslog-rotate ] || { echo "/usr/lib/rsyslog/rsyslog-rotate is missing: the rsyslog package changed" >&2; exit 1; }
  systemctl enable rsyslog.service
'
