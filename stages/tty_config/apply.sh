#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Root logins on the system console only, never on virtual consoles (CIS 9.4, STIG V-38492).

install -m 0600 -o root -g root "$assets_dir/securetty" "$chroot/etc/securetty"
