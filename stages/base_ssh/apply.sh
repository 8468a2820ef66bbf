#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# sshd hardening as the reference's OS-image spec checks it: no root, no passwords, only the
# bosh_sshers group, strong ciphers and MACs, a legal banner.

config=$chroot/etc/ssh/sshd_config
[ -f "$config" ] || fail "openssh-server is not installed (no /etc/ssh/sshd_config)"
chmod 0600 "$config"

while read -r key value; do
  set_config_option "$config" "$key" "$value"
done <<'OPTIONS'
UseDNS no
PermitRootLogin no
X11Forwarding no
MaxAuthTries 3
PermitEmptyPasswords no
HostbasedAuthentication no
Banner /etc/issue.net
IgnoreRhosts yes
ClientAliveInterval 180
ClientAliveCountMax 1
LoginGraceTime 60
Compression delayed
PermitUserEnvironment no
PasswordAuthentication no
PrintLastLog yes
AllowGroups bosh_sshers
DenyUsers root
Ciphers aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr
MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-512,hmac-sha2-256,umac-128@openssh.com
OPTIONS
sed -i -E '/^[# ]*X11DisplayOffset/d; /^[# ]*HostKey /d' "$config"
for type in rsa ecdsa ed25519; do
  echo "HostKey /etc/ssh/ssh_host_${type}_key" >>"$config"
done

banner='Unauthorized use is strictly prohibited. All access and activity
is subject to logging and monitoring.'
printf '%s\n' "$banner" >"$chroot/etc/issue"
printf '%s\n' "$banner" >"$chroot/etc/issue.net"
touch "$chroot/etc/motd"
chown root:root "$chroot"/etc/{issue,issue.net,motd}
chmod 0644 "$chroot"/etc/{issue,issue.net,motd}
if [ -e "$chroot/etc/default/motd-news" ]; then
  sed -i 's/^ENABLED=.*/ENABLED=0/' "$chroot/etc/default/motd-news"
else
  echo 'ENABLED=0' >"$chroot/etc/default/motd-news"
fi

# sshd itself must accept the result (host keys exist only for this check if none were made).
run_in_chroot "$chroot" '
  mkdir -p /run/sshd
  made=""
  if ! ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1; then ssh-keygen -A >/dev/null; made=1; fi
  /usr/sbin/sshd -t -f /etc/ssh/sshd_config
  if [ -n "$made" ]; then rm -f /etc/ssh/ssh_host_*; fi
'
