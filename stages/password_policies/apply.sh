#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# PAM and login.defs: no empty passwords, SHA-512 hashes, strong new passwords, lockout after
# failures, password ageing (STIG V-38497, V-38574 and friends).

pamd=$chroot/etc/pam.d
# Blank-password logins are disabled everywhere.
sed -i -E 's/[[:space:]]+nullok(_secure)?//g' "$pamd"/*
# pam_unix stores SHA-512 hashes (Debian's default is yescrypt, which the spec rejects).
sed -i -E '/^password.*pam_unix\.so/ { s/[[:space:]](yescrypt|md5|sha256|blowfish|bigcrypt|gost_yescrypt)\b//g; /sha512/! s/pam_unix\.so/pam_unix.so sha512/ }' "$pamd/common-password"
# New passwords are checked by pwquality before pam_unix.
if ! grep -q pam_pwquality.so "$pamd/common-password"; then
  sed -i -E '0,/^password.*pam_unix\.so/ s//password\trequisite\t\t\tpam_pwquality.so retry=3\n&/' "$pamd/common-password"
fi
cat >"$chroot/etc/security/pwquality.conf" <<'CONF'
# installed by password_policies
minlen = 14
dcredit = -1
ucredit = -1
lcredit = -1
ocredit = -1
difok = 8
maxrepeat = 3
CONF
# Lock an account for 15 minutes after 5 failed logins, for services that use pam_faillock.
cat >"$chroot/etc/security/faillock.conf" <<'CONF'
# installed by password_policies
deny = 5
unlock_time = 900
fail_interval = 900
CONF

defs=$chroot/etc/login.defs
set_config_option "$defs" PASS_MAX_DAYS 90 $'\t'
set_config_option "$defs" PASS_MIN_DAYS 1 $'\t'
set_config_option "$defs" PASS_WARN_AGE 7 $'\t'
set_config_option "$defs" ENCRYPT_METHOD SHA512 ' '
set_config_option "$defs" UMASK 077 $'\t'
