#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# auditd is installed with STIG rules, and disabled: the agent or a job enables it where wanted
# (the reference's OS-image spec expects it installed but not enabled).

pkg_mgr install auditd
install -m 0640 -o root -g root "$assets_dir/bosh.rules" "$chroot/etc/audit/rules.d/bosh.rules"
# Privileged binaries' use is audited too (STIG V-38567).
while IFS= read -r -d '' file; do
  path=/${file#"$chroot"/}
  echo "-a always,exit -F path=$path -F perm=x -F auid>=1000 -F auid!=unset -k privileged" >>"$chroot/etc/audit/rules.d/bosh.rules"
done < <(find "$chroot/usr" -xdev -type f \( -perm -4000 -o -perm -2000 \) -print0 | sort -z)
conf=$chroot/etc/audit/auditd.conf
set_config_option "$conf" space_left_action SYSLOG ' = '
set_config_option "$conf" admin_space_left_action SYSLOG ' = '
set_config_option "$conf" max_log_file_action ROTATE ' = '
set_config_option "$conf" num_logs 5 ' = '
mkdir -p "$chroot/var/log/audit"
chown root:root "$chroot/var/log/audit"
chmod 0750 "$chroot/var/log/audit"
run_in_chroot "$chroot" 'systemctl disable auditd.service'
