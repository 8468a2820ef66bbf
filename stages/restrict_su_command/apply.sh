#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Only members of the sudo group may use su (CIS 9.5); vcap is one.

run_in_chroot "$chroot" '
  su_pam=/etc/pam.d/su
  [ -f "$su_pam" ] || { echo "$su_pam is missing (util-linux/login not installed?)" >&2; exit 1; }
  sed -i -E "/^[#[:space:]]*auth[[:space:]]+required[[:space:]]+pam_wheel\.so/d" "$su_pam"
  line="auth       required   pam_wheel.so use_uid group=sudo"
  # After pam_rootok, so root itself may still su.
  if grep -q "^auth.*pam_rootok\.so" "$su_pam"; then
    sed -i -E "0,/^auth.*pam_rootok\.so.*\$/ s//&\n$line/" "$su_pam"
  else
    sed -i -E "0,/^auth/ s//$line\n&/" "$su_pam"
  fi
  getent group sudo >/dev/null || groupadd --system sudo
  usermod -aG sudo vcap
'
