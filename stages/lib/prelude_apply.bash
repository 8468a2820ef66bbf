# shellcheck shell=bash
# Sourced first by every apply.sh:
#   # shellcheck source=../lib/prelude_apply.bash
#   source "$(dirname "$0")/../lib/prelude_apply.bash"
# apply.sh runs on the host, as root, with WORK as $1; it changes the tree at $chroot, through
# run_in_chroot and the prelude's helpers (never by writing "$chroot/..." on the host side).
set -euo pipefail

work=${work:-${1:?usage: apply.sh WORK_DIR}}
chroot=${chroot:-$work/chroot}
lib_dir=${lib_dir:-$(dirname "${BASH_SOURCE[0]}")}
# shellcheck source=prelude_common.bash
source "$lib_dir/prelude_common.bash"

# What this stage's config.sh persisted.
if [ -n "${settings_file:-}" ] && [ -f "$settings_file" ]; then
  # shellcheck source=/dev/null
  source "$settings_file"
fi
