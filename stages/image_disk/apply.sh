#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The VM disk in the IaaS's format, written to $disk_dir by stemcell-builder disk-image (which
# owns the loop device and the mounts, and releases them on every path).

"$stemcell_builder" disk-image "$chroot" "$disk_dir" --format "$image_format" --firmware "${firmware:-bios}" ${disk_size_mib:+--size-mib "$disk_size_mib"}
