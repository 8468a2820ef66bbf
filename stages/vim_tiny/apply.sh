#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# vim-tiny is the editor, reachable as vim.

pkg_mgr install vim-tiny
if [ ! -e "$chroot/usr/bin/vim" ]; then
  ln -s vim.tiny "$chroot/usr/bin/vim"
fi
