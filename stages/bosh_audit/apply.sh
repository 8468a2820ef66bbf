#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# auditd installed with the reference's STIG/CIS rules and settings, and disabled: the agent
# starts it (bosh-start-logging-and-auditing; the reference's OS-image spec expects it installed
# but not enabled). Debian loads rules.d through audit-rules.service (augenrules --load), which
# auditd.service requires: it is disabled too, so nothing is audited before the agent says so.

pkg_mgr install auditd
install_file "$assets_dir/audit.rules" /etc/audit/rules.d/audit.rules 0640
run_in_chroot "$chroot" '
  rules=/etc/audit/rules.d/audit.rules
  rm -f /etc/audit/rules.d/bosh.rules
  # Every setuid/setgid program the image has is audited when run (CIS 8.1.12).
  {
    echo
    echo "# Use of privileged commands: every setuid/setgid file of the image"
    find /bin /sbin /usr/bin /usr/sbin /boot -xdev \( -perm -4000 -o -perm -2000 \) -type f | sort |
      awk "{ print \"-a always,exit -F path=\" \$1 \" -F perm=x -F auid>=500 -F auid!=4294967295 -k privileged\" }"
  } >>"$rules"
  # /etc/audit/audit.rules is what auditctl loads: compiled from rules.d now, and at each start.
  augenrules
  chown root:root /etc/audit/audit.rules
  chmod 0640 /etc/audit/audit.rules

  conf=/etc/audit/auditd.conf
  for setting in "disk_error_action SYSLOG" "disk_full_action SYSLOG" "admin_space_left_action SYSLOG" \
                 "space_left_action SYSLOG" "num_logs 5" "max_log_file 6" "max_log_file_action ROTATE" \
                 "log_group root" "space_left 75" "admin_space_left 50"; do
    key=${setting% *} value=${setting#* }
    sed -i -E "/^[#[:space:]]*${key}[[:space:]]*=/d" "$conf"
    echo "$key = $value" >>"$conf"
  done
  # Audit records reach syslog too (STIG: the audit trail survives a full audit disk).
  sed -i -E "s/^active[[:space:]]*=.*/active = yes/" /etc/audit/plugins.d/syslog.conf
  grep -qx "active = yes" /etc/audit/plugins.d/syslog.conf

  mkdir -p /var/log/audit
  chown root:root /var/log/audit
  chmod 0750 /var/log/audit
  systemctl disable auditd.service
  if [ -e /usr/lib/systemd/system/audit-rules.service ]; then systemctl disable audit-rules.service; fi
'
