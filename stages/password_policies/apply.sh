#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# PAM and login.defs as the reference sets them: no empty passwords (STIG V-38497), SHA-512
# hashes (V-38574), strong new passwords (pwquality: Debian has no pam_cracklib), no reuse of
# the last 24 (V-38658), lockout after 3 failures (pam_faillock in the stack, V-38573), a 4 s
# delay after a failed login, password ageing (V-38477).
#
# The common-* files are edited in place: pam-auth-update leaves locally changed files alone.

install_file "$assets_dir/pwquality.conf" /etc/security/pwquality.conf 0644
install_file "$assets_dir/faillock.conf" /etc/security/faillock.conf 0644
run_in_chroot "$chroot" '
  pamd=/etc/pam.d
  faillock="deny=3 unlock_time=604800 fail_interval=900"
  # Blank-password logins are disabled everywhere.
  find "$pamd" -type f -exec sed -i -E "s/[[:space:]]+nullok[^[:space:]]*//g" {} +

  # New passwords: pwquality first, then pam_unix with SHA-512, history and the minimum length.
  sed -i -E "/^password.*pam_(pwquality|cracklib)\.so/d" "$pamd/common-password"
  sed -i -E "/^password.*pam_unix\.so/ {
    s/[[:space:]](yescrypt|md5|sha256|sha512|blowfish|bigcrypt|gost_yescrypt|remember=[0-9]+|minlen=[0-9]+|rounds=[0-9]+)\b//g
    s/\$/ sha512 remember=24 minlen=14 rounds=5000/
    s/^/password\trequisite\t\t\tpam_pwquality.so retry=3 minlen=14 dcredit=-1 ucredit=-1 ocredit=-1 lcredit=-1 difok=8\n/
  }" "$pamd/common-password"

  # Lockout: faillock before pam_unix (preauth), on its failure (authfail) and success (authsucc).
  sed -i -E "/pam_faillock\.so/d" "$pamd/common-auth" "$pamd/common-account"
  sed -i -E "0,/^auth.*pam_unix\.so.*\$/ {
    s/^auth.*pam_unix\.so.*\$/auth\trequired\t\t\tpam_faillock.so preauth silent $faillock\n&\nauth\t[default=die]\t\t\tpam_faillock.so authfail $faillock\nauth\tsufficient\t\t\tpam_faillock.so authsucc audit $faillock/
  }" "$pamd/common-auth"
  echo "account	required			pam_faillock.so" >>"$pamd/common-account"
  for file in common-password common-auth common-account; do
    grep -q pam_unix.so "$pamd/$file" || { echo "$pamd/$file has no pam_unix.so line to harden" >&2; exit 1; }
  done
  grep -q "pam_faillock.so authfail" "$pamd/common-auth"

  sed -i -E "s/^(auth[[:space:]]+optional[[:space:]]+pam_faildelay\.so[[:space:]]+delay=)[0-9]+/\14000000/" "$pamd/login"
'
for option in 'PASS_MAX_DAYS 90' 'PASS_MIN_DAYS 1' 'PASS_WARN_AGE 7' 'ENCRYPT_METHOD SHA512' 'UMASK 077'; do
  set_config_option /etc/login.defs "${option% *}" "${option#* }" ' '
done
# login.defs only applies to new accounts: vcap exists already.
run_in_chroot "$chroot" 'chage --mindays 1 vcap'
