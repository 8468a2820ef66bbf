#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# vim-tiny is the editor, reachable as vim.

pkg_mgr install vim-tiny
run_in_chroot "$chroot" '[ -e /usr/bin/vim ] || ln -s vim.tiny /usr/bin/vim'
