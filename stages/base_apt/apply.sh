#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Package sources with updates and security pockets, no recommends, then a full upgrade.
# The mirror is whatever the bootstrap used (its own default, or --mirror): never named here;
# assets/configure-sources.sh reads the tree's sources with apt's own parser.

run_in_chroot "$chroot" "$(cat "$assets_dir/configure-sources.sh")" \
  "$os_suite" "$os_components" "$os_name" "${security_mirror:-}"

write_file /etc/apt/apt.conf.d/90stemcell <<'CONF'
// written by the base_apt stage
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
CONF

# Through the prelude, so the package cache serves and keeps what the upgrade downloads.
apt_update
pkg_mgr dist-upgrade
