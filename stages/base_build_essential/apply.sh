#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Compilers: BOSH compilation VMs build release packages from source on the stemcell. The agent
# removes them from other VMs using the list dev_tools_config writes.

pkg_mgr install build-essential
