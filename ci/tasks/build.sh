#!/usr/bin/env bash
# Concourse task ci/tasks/build.yml: one stemcell for IAAS into stemcell/. The OS image comes
# from the os-image input when given, else from S3 (OS_IMAGE_BUCKET, the key the OS-image job
# writes for version/number), else it is built here first. Runs as root in a privileged
# container; runs just as well outside Concourse from a directory laid out the same way (each
# input and output a subdirectory of the working directory, params in the environment).
set -euo pipefail

task_dir=$PWD
here=$(cd "$(dirname "$0")" && pwd)
started=$SECONDS

task_name=build.sh
# shellcheck source=common.bash
source "$here/common.bash"
# build-stemcell would take an empty HYPERVISOR literally.
[ -n "${HYPERVISOR:-}" ] || unset HYPERVISOR
[ -n "${IAAS:-}" ] || fail "param IAAS is empty: set it to warden, openstack, aws, google, azure or vsphere"

number=$(version_number)
# BOSH stemcell versions drop trailing .0s, as the reference's task does (1.42.0 -> 1.42).
stemcell_version=${number%.0}
stemcell_version=${stemcell_version%.0}

# The agent: bosh-agent/bosh-agent, or the one linux release binary a GitHub release holds.
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
shopt -s nullglob
agents=("$task_dir"/bosh-agent/bosh-agent-*-linux-"$arch")
shopt -u nullglob
if [ -f "$task_dir/bosh-agent/bosh-agent" ]; then
  agents+=("$task_dir/bosh-agent/bosh-agent")
fi
[ "${#agents[@]}" -eq 1 ] ||
  fail "input bosh-agent must hold one bosh-agent or bosh-agent-VERSION-linux-$arch file, found ${#agents[@]}"
agent=${agents[0]}

install_builder

# Scratch space in the task's cache: on the worker's volume (overlayfs layers need a real file
# system under them, which a container's root may not be). Kept after a failure for
# fly hijack, cleared by the next run.
scratch=$task_dir/cache/build
rm -rf --one-file-system "$scratch"
mkdir -p "$scratch" "$task_dir/cache/base"

if [ "$IAAS" != warden ]; then
  "$here/prepare-loop-devices.sh"
  "$here/prepare-loop-devices.sh" --watch &
  watcher=$!
  trap 'kill "$watcher" 2>/dev/null || true' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
fi

if [ -d "$task_dir/os-image" ]; then
  shopt -s nullglob
  images=("$task_dir"/os-image/*.tgz "$task_dir"/os-image/*.tar.gz "$task_dir"/os-image/*.tar.zst)
  shopt -u nullglob
  [ "${#images[@]}" -eq 1 ] ||
    fail "input os-image must hold one OS image (*.tgz, *.tar.gz or *.tar.zst), found ${#images[@]}"
  os_image=${images[0]}
  [ -f "$os_image.sha256" ] ||
    fail "input os-image has no $(basename "$os_image").sha256 beside the image: add the sidecar build-os-image wrote"
  echo "OS image from input os-image: $(basename "$os_image")"
elif [ -n "${OS_IMAGE_BUCKET:-}" ]; then
  url=s3://$OS_IMAGE_BUCKET/${OS_IMAGE_PREFIX:-}os-image-$number.tgz
  os_image=$scratch/os-image-$number.tgz
  echo "OS image from $url"
  stemcell-builder download-os-image "$url" "$os_image"
else
  echo "no os-image input and no OS_IMAGE_BUCKET: building the $os OS image first"
  os_image=$scratch/os-image.tgz
  stemcell-builder build-os-image --os "$os" \
    --stages-dir "$repo/stages" --assets-dir "$repo/assets" \
    --work-dir "$scratch/os-image-work" --cache-dir "$task_dir/cache/base" \
    --output "$os_image"
fi

blobstore=()
if [ -d "$task_dir/blobstore-clis" ]; then
  blobstore=(--set "blobstore_clis_dir=$task_dir/blobstore-clis")
fi
hypervisor=()
if [ -n "${HYPERVISOR:-}" ]; then
  hypervisor=(--hypervisor "$HYPERVISOR")
fi

stemcell-builder build-stemcell --os-image "$os_image" --iaas "$IAAS" "${hypervisor[@]}" \
  --os "$os" --version "$stemcell_version" --agent "$agent" "${blobstore[@]}" \
  --stages-dir "$repo/stages" --assets-dir "$repo/assets" \
  --work-dir "$scratch/stemcell-work" --output-dir "$task_dir/stemcell"

shopt -s nullglob
stemcells=("$task_dir"/stemcell/bosh-stemcell-*.tgz)
shopt -u nullglob
[ "${#stemcells[@]}" -eq 1 ] || fail "expected one stemcell in stemcell/, found ${#stemcells[@]}"
stemcell-builder inspect "${stemcells[0]}" | tail -n 1
rm -rf --one-file-system "$scratch"
echo "built stemcell/$(basename "${stemcells[0]}") in $((SECONDS - started)) s"
