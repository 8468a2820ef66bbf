#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The OS definition's package set (already in a bootstrapped base; needed for --base trees),
# and removal of services the STIG forbids (telnet, rsh, tftp, ftp servers, gconf).

# shellcheck disable=SC2086 # a list of names
pkg_mgr install $os_packages

run_in_chroot "$chroot" '
  for pkg in telnetd inetutils-telnetd rsh-server rsh-redone-server tftpd tftpd-hpa atftpd vsftpd gconf2 xinetd nis; do
    if dpkg-query -W -f="\${Status}" "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      apt-get -y -q purge "$pkg"
    fi
  done
'
# The agent needs dig; cron needs crontab.
for tool in usr/bin/dig usr/bin/crontab; do
  [ -e "$chroot/$tool" ] || fail "/$tool is missing after installing the package set"
done
