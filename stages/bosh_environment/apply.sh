#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The agent's tools are on every login's PATH (the reference's PATH, games dirs included, so
# its check reads ours unchanged).

run_in_chroot "$chroot" '
  touch /etc/environment
  sed -i "/^PATH=/d" /etc/environment
  echo "PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games:/usr/local/games:/var/vcap/bosh/bin\"" >>/etc/environment
'
