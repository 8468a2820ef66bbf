#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# sysstat collects every 10 minutes (its cron/timer), so operators have sar history on a VM.

pkg_mgr install sysstat
set_config_option "$chroot/etc/default/sysstat" ENABLED '"true"' =
