#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Only members of the sudo group may use su; vcap is one.

su_pam=$chroot/etc/pam.d/su
[ -f "$su_pam" ] || fail "/etc/pam.d/su is missing (util-linux/login not installed?)"
sed -i -E '/^[#[:space:]]*auth[[:space:]]+required[[:space:]]+pam_wheel\.so/d' "$su_pam"
# After pam_rootok, so root itself may still su.
if grep -q '^auth.*pam_rootok\.so' "$su_pam"; then
  sed -i -E '0,/^auth.*pam_rootok\.so.*$/ s//&\nauth       required   pam_wheel.so use_uid group=sudo/' "$su_pam"
else
  sed -i -E '0,/^auth/ s//auth       required   pam_wheel.so use_uid group=sudo\n&/' "$su_pam"
fi
run_in_chroot "$chroot" 'getent group sudo >/dev/null || groupadd --system sudo; usermod -aG sudo vcap'
