#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Root logins on the system console only, never on virtual consoles (CIS 9.4, STIG V-38492).

install_file "$assets_dir/securetty" /etc/securetty 0600
