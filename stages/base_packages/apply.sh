#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The OS definition's package set (already in a bootstrapped base; needed for --base trees),
# and removal of what the STIG and CIS forbid: telnet, rsh, tftp and ftp servers, NIS, xinetd,
# SNMP, mail servers, gconf, X, crash reporters, rpm.

# shellcheck disable=SC2086 # a list of names
pkg_mgr install $os_packages

run_in_chroot "$chroot" '
  forbidden="telnetd telnetd-ssl inetutils-telnetd telnet-server mactelnet-server rsh-server rsh-redone-server
    tftp tftpd tftpd-hpa tftp-hpa atftp atftpd vsftpd ftpd xinetd nis snmp snmpd sendmail sendmail-bin postfix
    gconf2 xserver-xorg apport whoopsie rpm"
  installed=$(dpkg-query -W -f="\${db:Status-Status} \${Package}\n" | awk "\$1 == \"installed\" { print \$2 }")
  purge=""
  for pkg in $forbidden; do
    if grep -qx "$pkg" <<<"$installed"; then purge="$purge $pkg"; fi
  done
  if [ -n "$purge" ]; then
    # shellcheck disable=SC2086
    apt-get -y -q purge --auto-remove $purge
  fi
  # The agent needs dig; cron needs crontab.
  for tool in dig crontab; do
    command -v "$tool" >/dev/null || { echo "$tool is missing after installing the package set" >&2; exit 1; }
  done
  # Operators (and the reference) call it rescan-scsi-bus; Debian ships it in sg3-utils.
  if [ -x /usr/bin/rescan-scsi-bus.sh ]; then ln -sfn /usr/bin/rescan-scsi-bus.sh /usr/sbin/rescan-scsi-bus; fi
'
