#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Azure hands the VM its provisioning data on a UDF-formatted virtual DVD: udf may load there.

run_in_chroot "$chroot" 'sed -i "/^install udf \/bin\/true\$/d" /etc/modprobe.d/blacklist.conf'
