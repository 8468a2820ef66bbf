#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# sshd hardening as the reference's OS-image spec checks it: no root, no passwords, only the
# bosh_sshers group, strong ciphers and MACs, a legal banner; no host keys in the image.
#
# The reference appends its options to sshd_config, after "Include sshd_config.d/*.conf"; sshd
# keeps the first value it reads, so any drop-in (cloud-init's PasswordAuthentication yes, say)
# overrode them. Here they open the file, above the Include: the effective configuration (sshd
# -T) is the hardened one whatever the drop-ins say, and the options stay in sshd_config, where
# the reference's checks and auditors' tools look for them.

[ -f "$chroot/etc/ssh/sshd_config" ] || fail "openssh-server is not installed (no /etc/ssh/sshd_config)"
run_in_chroot "$chroot" '
  config=/etc/ssh/sshd_config
  block=$1
  # Every option of the block is stated once: earlier settings of it (commented or not),
  # X11DisplayOffset, DSA keys and an earlier copy of the block go.
  keys=$(grep -v "^#" <<<"$block" | awk "{ print \$1 }" | sort -u | paste -sd "|")
  sed -i -E "/^# BOSH hardening/,/^# end of BOSH hardening/d; /^[#[:space:]]*($keys|X11DisplayOffset)([[:space:]]|\$)/d" "$config"
  { printf "%s\n" "$block"; cat "$config"; } >"$config.new"
  chown root:root "$config.new"
  chmod 0600 "$config.new"
  mv -f "$config.new" "$config"

  # sshd itself must accept the result; the keys made for the check do not stay.
  mkdir -p /run/sshd
  rm -f /etc/ssh/ssh_host_*
  ssh-keygen -A >/dev/null
  /usr/sbin/sshd -t -f "$config"
  rm -f /etc/ssh/ssh_host_*
  rm -rf /run/sshd
' "$(cat "$assets_dir/sshd-hardening.conf")"
install_file "$assets_dir/10-host-keys.conf" /etc/systemd/system/ssh.service.d/10-host-keys.conf

banner='Unauthorized use is strictly prohibited. All access and activity
is subject to logging and monitoring.'
printf '%s\n' "$banner" | write_file /etc/issue 0644
printf '%s\n' "$banner" | write_file /etc/issue.net 0644
run_in_chroot "$chroot" '
  touch /etc/motd
  chown root:root /etc/motd
  chmod 0644 /etc/motd
  : >/etc/motd
  if [ -e /etc/default/motd-news ]; then
    sed -i "s/^ENABLED=.*/ENABLED=0/" /etc/default/motd-news
  else
    echo ENABLED=0 >/etc/default/motd-news
  fi
'
