#!/usr/bin/env bash
# Concourse task ci/tasks/build-os-image.yml: builds the OS image into os-image/, compares its
# package list with the one last published (s3://OS_IMAGE_BUCKET/OS_IMAGE_PREFIXos-image-
# NUMBER.tgz.packages.txt, NUMBER from the version input) and, only when a package changed,
# bumps the version into bumped-version/number and uploads the image, its .sha256 and its
# .packages.txt under the new number. When nothing changed bumped-version/number keeps the old
# number, nothing is uploaded, and the task still succeeds (putting an unchanged number to the
# semver resource makes no new version, so no stemcell job triggers).
set -euo pipefail

task_dir=$PWD
here=$(cd "$(dirname "$0")" && pwd)
started=$SECONDS

task_name=build-os-image.sh
# shellcheck source=common.bash
source "$here/common.bash"
level=${BUMP_LEVEL:-minor}

number=
if [ -d "$task_dir/version" ]; then
  number=$(version_number)
fi
if [ -n "${OS_IMAGE_BUCKET:-}" ] && [ -z "$number" ]; then
  fail "OS_IMAGE_BUCKET is set but the version input is missing: map the semver resource that numbers OS images to it"
fi

install_builder

scratch=$task_dir/cache/build
rm -rf --one-file-system "$scratch"
mkdir -p "$scratch" "$task_dir/cache/base"

image=$task_dir/os-image/os-image.tgz
stemcell-builder build-os-image --os "$os" \
  --stages-dir "$repo/stages" --assets-dir "$repo/assets" \
  --work-dir "$scratch/work" --cache-dir "$task_dir/cache/base" \
  --output "$image"

if [ -z "${OS_IMAGE_BUCKET:-}" ]; then
  if [ -n "$number" ]; then
    printf '%s\n' "$number" >"$task_dir/bumped-version/number"
  fi
  rm -rf --one-file-system "$scratch"
  echo "no OS_IMAGE_BUCKET: built os-image/os-image.tgz; nothing compared or uploaded"
  exit 0
fi

prefix=s3://$OS_IMAGE_BUCKET/${OS_IMAGE_PREFIX:-}
previous=$scratch/previous.packages.txt
if [ "$number" = 0.0.0 ]; then
  echo "version 0.0.0: no OS image published yet, so every package counts as added"
  : >"$previous"
else
  stemcell-builder download-os-image "${prefix}os-image-$number.tgz.packages.txt" "$previous"
fi

printf '%s\n' "$number" >"$task_dir/bumped-version/number"
status=0
stemcell-builder bump --previous "$previous" --current "$image.packages.txt" \
  --version-file "$task_dir/bumped-version/number" --level "$level" || status=$?
case $status in
  0)
    new=$(tr -d '[:space:]' <"$task_dir/bumped-version/number")
    # The image first, its package list last: the list is what the next run compares
    # against, so it must never name an image that is not there.
    stemcell-builder upload-os-image "$image" "${prefix}os-image-$new.tgz"
    stemcell-builder upload-os-image "$image.packages.txt" "${prefix}os-image-$new.tgz.packages.txt"
    echo "published ${prefix}os-image-$new.tgz (version $number -> $new)"
    ;;
  3)
    echo "no package changed since version $number: nothing published"
    ;;
  *)
    fail "stemcell-builder bump failed (exit $status): see its message above"
    ;;
esac
rm -rf --one-file-system "$scratch"
echo "done in $((SECONDS - started)) s"
