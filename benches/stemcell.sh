#!/usr/bin/env bash
# Stemcells from a local OS image: warden and openstack, each cold (empty layer cache, new work
# dir), warm (the same build again in the same work dir: every stage from its layer) and from
# the cache alone (a new work dir, every layer restored from the layer cache). Prints each
# build's seconds and, for the warm openstack build, each step's share of it. The peer is what
# the reference does for the same artifact: `tar -cz` of the disk (`image`), then `tar -cz` of
# the stemcell's members, timed here on the very files our build wrote.
#
# Usage: benches/stemcell.sh OS_IMAGE [RUNS]   (default 3; OS_IMAGE from build-os-image).
# Needs root and the Debian archive (the cold openstack build installs a kernel and GRUB).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${STEMCELL_BUILDER:-$repo/target/release/stemcell-builder}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --locked)
image=$(readlink -f "${1:?usage: benches/stemcell.sh OS_IMAGE [RUNS]}")
runs=${2:-3}
[ -f "$image" ] || { echo "no OS image at $1: build one with build-os-image" >&2; exit 1; }

scratch=$(mktemp -d /var/tmp/stemcell-builder-stemcell-bench.XXXX)
trap 'rm -rf "$scratch"' EXIT
printf '#!/bin/sh\nexec sleep infinity\n' >"$scratch/agent"
chmod 0755 "$scratch/agent"
echo "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", b - a }'; }

# build IAAS WORK LABEL: one build-stemcell; prints its wall seconds.
build() {
  local iaas=$1 work=$2 label=$3 start
  mkdir -p "$scratch/out-$label"
  start=$(date +%s.%N)
  if ! (cd "$repo" && "$bin" build-stemcell --os-image "$image" --iaas "$iaas" --version 0.1 \
    --agent "$scratch/agent" --work-dir "$work" --cache-dir "$scratch/cache" \
    --output-dir "$scratch/out-$label" >"$scratch/$label.out" 2>"$scratch/$label.err"); then
    echo "build $label failed:" >&2
    tail -20 "$scratch/$label.err" >&2
    exit 1
  fi
  seconds "$start" "$(date +%s.%N)"
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A result
for iaas in warden openstack; do
  cold=() warm=() restored=()
  for i in $(seq 1 "$runs"); do
    rm -rf "$scratch/cache" "$scratch/work-$iaas" "$scratch/work2-$iaas"
    cold+=("$(build "$iaas" "$scratch/work-$iaas" "$iaas-cold$i")")
    warm+=("$(build "$iaas" "$scratch/work-$iaas" "$iaas-warm$i")")
    restored+=("$(build "$iaas" "$scratch/work2-$iaas" "$iaas-restored$i")")
    if grep -E '^  [0-9]{2}-' "$scratch/$iaas-warm$i.out" | grep -v 'image_disk' | grep -q ' ran '; then
      echo "warm $iaas build $i ran a stage:" >&2
      cat "$scratch/$iaas-warm$i.out" >&2
      exit 1
    fi
    echo "$iaas run $i: cold ${cold[-1]} s, warm ${warm[-1]} s, from the cache ${restored[-1]} s" >&2
  done
  result[$iaas-cold]=$(median "${cold[@]}")
  result[$iaas-warm]=$(median "${warm[@]}")
  result[$iaas-restored]=$(median "${restored[@]}")
done

# The reference's packaging of the same files: tar -cz of the disk, then of the members.
disk=$scratch/work-openstack/disk/root.img
members=$scratch/peer-members
mkdir -p "$members"
tar -xzf "$scratch"/out-openstack-warm"$runs"/*.tgz -C "$members"
peer=()
for _ in $(seq 1 "$runs"); do
  start=$(date +%s.%N)
  tar -czf "$scratch/peer-image" -C "$(dirname "$disk")" root.img
  (cd "$members" && cp "$scratch/peer-image" image && tar -czf "$scratch/peer.tgz" -- *)
  peer+=("$(seconds "$start" "$(date +%s.%N)")")
done
# A duration as the report prints it (4.5s, 1m20.7s) in seconds.
secs='function secs(d,  p) { sub("s$", "", d); if (split(d, p, "m") == 2) return p[1] * 60 + p[2]; return d + 0 } '
ours_package=$(awk "$secs"'$1 == "package" { print secs($2) }' "$scratch/openstack-warm$runs.out")

# shares FILE: each step of a duration report with its share of the total.
shares() {
  awk "$secs"'/^  [0-9a-z]/ && $2 ~ /s$/ { v[$1] = secs($2); o[++n] = $1 }
       END { for (i = 1; i <= n; i++) if (o[i] != "total") printf "  %-28s %6.1f s %5.1f%%\n", o[i], v[o[i]], 100 * v[o[i]] / v["total"] }' "$1"
}
for kind in cold warm; do
  echo
  echo "$kind openstack build, the last run (each step's share of the total):"
  shares "$scratch/openstack-$kind$runs.out"
done
echo
printf '%-58s %9s\n' "build (medians of $runs)" seconds
for iaas in warden openstack; do
  printf '%-58s %9.1f\n' "$iaas: cold (empty layer cache)" "${result[$iaas-cold]}"
  printf '%-58s %9.1f\n' "$iaas: warm (same work dir, every layer kept)" "${result[$iaas-warm]}"
  printf '%-58s %9.1f\n' "$iaas: new work dir, every layer from the cache" "${result[$iaas-restored]}"
done
p=$(median "${peer[@]}")
printf '%-58s %9.1f\n' "peer: tar -cz root.img, then tar -cz of the members" "$p"
awk -v o="$ours_package" -v p="$p" 'BEGIN { printf "our package step / peer = %.2f (the last warm run: %.1f s)\n", o / p, o }'
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
