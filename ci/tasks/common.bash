# shellcheck shell=bash
# What every task script does first, sourced by them: errors as one line naming the script,
# params Concourse passed empty treated as unset, the OS params checked, and stemcell-builder
# installed from the task's stemcell-builder input. Expects task_dir and task_name to be set.

fail() {
  echo "$task_name: $*" >&2
  exit 1
}

# Concourse passes a param declared without a value as an empty variable; the AWS SDK would
# take an empty region or endpoint literally.
[ -n "${AWS_ACCESS_KEY_ID:-}" ] || unset AWS_ACCESS_KEY_ID
[ -n "${AWS_SECRET_ACCESS_KEY:-}" ] || unset AWS_SECRET_ACCESS_KEY
[ -n "${AWS_SESSION_TOKEN:-}" ] || unset AWS_SESSION_TOKEN
[ -n "${AWS_REGION:-}" ] || unset AWS_REGION
[ -n "${AWS_ENDPOINT_URL:-}" ] || unset AWS_ENDPOINT_URL
[ -n "${AWS_S3_FORCE_PATH_STYLE:-}" ] || unset AWS_S3_FORCE_PATH_STYLE

[ -n "${OS_NAME:-}" ] || fail "param OS_NAME is empty: set it, e.g. debian"
[ -n "${OS_VERSION:-}" ] || fail "param OS_VERSION is empty: set it, e.g. trixie"
# shellcheck disable=SC2034 # used by the scripts that source this
os=$OS_NAME-$OS_VERSION

# version_number: the semver the version input holds.
version_number() {
  [ -s "$task_dir/version/number" ] || fail "input version has no file 'number': map a semver resource to it"
  tr -d '[:space:]' <"$task_dir/version/number"
}

# install_builder: stemcell-builder from the stemcell-builder input, unless the image has it.
repo=$task_dir/stemcell-builder
install_builder() {
  if [ "${STEMCELL_BUILDER_INSTALL:-true}" = true ]; then
    echo "installing stemcell-builder from the stemcell-builder input (scripts/install.sh)"
    "$repo/scripts/install.sh"
  fi
  command -v stemcell-builder >/dev/null ||
    fail "stemcell-builder is not on PATH: set STEMCELL_BUILDER_INSTALL=true or use an image that has it"
}
