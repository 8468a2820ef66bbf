#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# sysstat collects every 10 minutes (its cron/timer), so operators have sar history on a VM.

pkg_mgr install sysstat
set_config_option /etc/default/sysstat ENABLED '"true"' =
