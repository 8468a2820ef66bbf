#!/usr/bin/env bash
# gzip against its peers on one real tree: `stemcell-builder pack` vs `tar -c | pigz -6`, and
# `stemcell-builder unpack` vs `tar -xzf` of the same image, in alternating runs (A B A B ...),
# printing each side's median wall seconds, the median of the pairwise ratios, the sizes and the
# load. Usage: benches/gzip.sh [TREE]   (RUNS=3 by default; TREE defaults to the trixie tree
# with a kernel that benches/pack.sh bootstraps into /var/tmp/stemcell-builder-bench/tree).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${STEMCELL_BUILDER:-$repo/target/release/stemcell-builder}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --locked)
runs=${RUNS:-3}
for tool in pigz /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y pigz time" >&2; exit 1; }
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
out=$(mktemp -d "$scratch/gzip.XXXX")
trap 'rm -rf "$out"' EXIT
echo "tree: $tree ($(($(du -sb "$tree" | cut -f1) / 1000000)) MB), $(nproc) cores, $runs alternating runs each"
echo "load before: $(uptime | sed 's/.*load average: //')"

# wall SCRIPT: runs it under GNU time, prints its wall seconds.
wall() {
  sync
  /usr/bin/time -f '%e' -o "$out/time" bash -c "$1" >/dev/null 2>"$out/err" ||
    { echo "failed: $1" >&2; cat "$out/err" >&2; exit 1; }
  cat "$out/time"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# compare NAME_A SCRIPT_A NAME_B SCRIPT_B: alternating runs, medians and ratios. Each script
# sees the run's number as $run.
compare() {
  local a=() b=() r=() ta tb
  for run in $(seq "$runs"); do
    export run
    ta=$(wall "$2")
    tb=$(wall "$4")
    a+=("$ta") b+=("$tb") r+=("$(awk -v x="$ta" -v y="$tb" 'BEGIN { printf "%.3f", x / y }')")
  done
  printf '%-28s median %6.2f s  (runs: %s)\n' "$1" "$(printf '%s\n' "${a[@]}" | median)" "${a[*]}"
  printf '%-28s median %6.2f s  (runs: %s)\n' "$3" "$(printf '%s\n' "${b[@]}" | median)" "${b[*]}"
  printf '%-28s %.2fx  (pairs: %s)\n' "ratio (median of pairs)" "$(printf '%s\n' "${r[@]}" | median)" "${r[*]}"
}

# Each tool's output of the last run is kept to compare sizes and to unpack.
compare "stemcell-builder pack" "'$bin' pack '$tree' '$out/ours.tgz'" \
  "tar -c | pigz -6" "tar -C '$tree' -cf - . | pigz -6 > '$out/pigz.tgz'"
echo "size: ours $(stat -c %s "$out/ours.tgz") bytes, pigz -6 $(stat -c %s "$out/pigz.tgz") bytes"
echo
# Every unpack goes to a directory of its own, and none is removed before the end: ext4 passes
# over inodes freed in the last minute or so when it allocates new ones (recently_deleted() in
# fs/ext4/ialloc.c), so extracting right after an `rm -rf` of the last run's 12,000 files spends
# seconds in the kernel, for either tool, and measures the file system's bookkeeping instead.
# One untimed run of each first touches the memory the page cache will use.
"$bin" unpack "$out/ours.tgz" "$out/x.warm" >/dev/null
mkdir "$out/y.warm" && tar -xzf "$out/ours.tgz" -C "$out/y.warm"
compare "stemcell-builder unpack" "'$bin' unpack '$out/ours.tgz' '$out/x.'\$run" \
  "tar -xzf (same image)" "mkdir '$out/y.'\$run && tar -xzf '$out/ours.tgz' -C '$out/y.'\$run"
echo "load after: $(uptime | sed 's/.*load average: //')"
