#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# bosh_sudoers members may sudo without a password; nobody else gets NOPASSWD (STIG V-58901).

install_file "$assets_dir/sudoers" /etc/sudoers 0440
run_in_chroot "$chroot" 'visudo -c -f /etc/sudoers'
