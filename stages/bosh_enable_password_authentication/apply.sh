#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# vSphere only, as the reference's stemcells: sshd takes passwords, since vSphere has no metadata
# service to hand a VM an operator's key, and operators log in with the password the director
# sets (env.bosh.password). base_ssh's block at the top of sshd_config holds the option, and
# sshd keeps the first value it reads, so the change is made there, in place.

run_in_chroot "$chroot" '
  config=/etc/ssh/sshd_config
  # Run again on a tree it already changed (--resume-from, --no-layers): nothing to do.
  if [ "$(grep -m1 "^PasswordAuthentication " "$config")" = "PasswordAuthentication yes" ]; then
    exit 0
  fi
  grep -q "^PasswordAuthentication no\$" "$config" ||
    { echo "$config has no \"PasswordAuthentication no\" line of base_ssh to change: run base_ssh in the OS image first" >&2; exit 1; }
  sed -i "s/^PasswordAuthentication no\$/PasswordAuthentication yes/" "$config"
'
