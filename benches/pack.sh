#!/usr/bin/env bash
# Packs a real debootstrapped tree with `stemcell-builder pack` and with the reference commands
# (tar -cz, tar | pigz, tar | zstd -T0), three runs each, and prints medians, ratios, sizes and
# our peak memory. Usage: benches/pack.sh [TREE]   (default: a trixie tree with a kernel,
# bootstrapped once into /var/tmp/stemcell-builder-bench/tree).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${STEMCELL_BUILDER:-$repo/target/release/stemcell-builder}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --locked)
for tool in pigz zstd /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y pigz zstd time" >&2; exit 1; }
done

scratch=/var/tmp/stemcell-builder-bench
tree=${1:-$scratch/tree}
if [ ! -d "$tree" ]; then
  mkdir -p "$scratch"
  echo "bootstrapping a benchmark tree into $tree ..." >&2
  mmdebstrap --variant=minbase \
    --include=linux-image-amd64,grub-pc,systemd,systemd-sysv,openssh-server,sudo,rsyslog,auditd,cron,chrony,runit,monit,vim-tiny,sysstat,libpam-pwquality,udev,initramfs-tools \
    trixie "$tree" >/dev/null
fi
out=$(mktemp -d "$scratch/out.XXXX")
trap 'rm -rf "$out"' EXIT
size=$(du -sb "$tree" | cut -f1)
echo "tree: $tree ($((size / 1000000)) MB), $(nproc) cores"

median() { sort -n | sed -n 2p; }
# run NAME FILE COMMAND...: three timed runs; prints the median seconds, keeps the output size.
declare -A seconds bytes peak
run() {
  local name=$1 file=$2
  shift 2
  local times=()
  for _ in 1 2 3; do
    sync
    /usr/bin/time -f '%e %M' -o "$out/time" bash -c "$*" >/dev/null 2>&1
    times+=("$(cut -d' ' -f1 "$out/time")")
    peak[$name]=$(cut -d' ' -f2 "$out/time")
  done
  seconds[$name]=$(printf '%s\n' "${times[@]}" | median)
  bytes[$name]=$(stat -c %s "$file")
  rm -f "$file" "$file.sha256" "$file.packages.txt"
}

run "tar -cz" "$out/a.tgz" "tar -C '$tree' -czf '$out/a.tgz' ."
run "tar | pigz" "$out/b.tgz" "tar -C '$tree' -cf - . | pigz -6 > '$out/b.tgz'"
run "pack (gzip)" "$out/c.tgz" "'$bin' pack '$tree' '$out/c.tgz'"
run "tar | zstd -T0" "$out/d.tzst" "tar -C '$tree' -cf - . | zstd -q -T0 -3 > '$out/d.tzst'"
run "pack (zstd)" "$out/e.tzst" "'$bin' pack --compression zstd '$tree' '$out/e.tzst'"

printf '%-16s %9s %9s %11s %14s %14s\n' command seconds MB "vs tar -cz" "vs tar|pigz" "peak RSS MB"
for name in "tar -cz" "tar | pigz" "pack (gzip)" "tar | zstd -T0" "pack (zstd)"; do
  awk -v n="$name" -v s="${seconds[$name]}" -v b="${bytes[$name]}" -v cz="${seconds[tar -cz]}" \
    -v pz="${seconds[tar | pigz]}" -v m="${peak[$name]}" \
    'BEGIN { printf "%-16s %9.2f %9.1f %10.2fx %13.2fx %14.1f\n", n, s, b / 1e6, cz / s, pz / s, m / 1024 }'
done
echo "(ratios: how many times faster than the reference; peak RSS of the last run, for tar pipelines the tar process)"
