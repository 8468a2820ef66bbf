#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The agent's tools are on every login's PATH.

env_file=$chroot/etc/environment
touch "$env_file"
sed -i '/^PATH=/d' "$env_file"
echo 'PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/var/vcap/bosh/bin"' >>"$env_file"
