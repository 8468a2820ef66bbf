#!/usr/bin/env bash
# The incremental rebuild of stage layers: a full build-os-image of the default OS (the real
# stages) from an empty layer cache (cold), then the same build with its last stage changed
# (warm: only that stage runs, every other layer is kept from the work dir), RUNS times each.
# Prints the medians and warm / cold. Also times a build with nothing changed and one in a new
# work dir restoring every layer from the cache.
#
# Usage: benches/layers.sh [RUNS]   (default 3). Needs root and the Debian archive; the base is
# bootstrapped once into this run's own cache before the first timed build, so "cold" is
# every stage plus the archive, not the network.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${STEMCELL_BUILDER:-$repo/target/release/stemcell-builder}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --locked)
runs=${1:-3}

scratch=$(mktemp -d /var/tmp/stemcell-builder-layers-bench.XXXX)
trap 'rm -rf "$scratch"' EXIT
cache=$scratch/cache
stages=$scratch/stages
cp -a "$repo/stages" "$stages"
last=$(awk '/^  os-debian:/{f=1; next} f && /^    - /{s=$2} f && /^  [a-z]/{exit} END{print s}' "$stages/collections.yml")
echo "default OS, $(grep -c '^    - ' <(awk '/^  os-debian:/{f=1; next} f && /^  [a-z]/{exit} f' "$stages/collections.yml")) stages, last: $last; $(nproc) cores"

# build WORK LABEL: one build-os-image; prints its wall seconds.
build() {
  local work=$1 label=$2 start end
  start=$(date +%s.%N)
  if ! "$bin" build-os-image --stages-dir "$stages" --assets-dir "$repo/assets" \
    --work-dir "$work" --cache-dir "$cache" --output "$scratch/os-image.tgz" \
    >"$scratch/$label.out" 2>"$scratch/$label.err"; then
    echo "build $label failed:" >&2
    tail -20 "$scratch/$label.err" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f\n", b - a }'
}

echo "bootstrapping the base into the bench cache (not timed) ..." >&2
"$bin" build-os-image --stages-dir "$stages" --assets-dir "$repo/assets" --work-dir "$scratch/warmup" \
  --cache-dir "$cache" --output "$scratch/os-image.tgz" --until "$(awk '/^  os-debian:/{f=1; next} f && /^    - /{print $2; exit}' "$stages/collections.yml")" \
  >/dev/null 2>&1
rm -rf "$scratch/warmup" "$cache/layers"

cold=() warm=()
for i in $(seq 1 "$runs"); do
  rm -rf "$scratch/work" "$cache/layers"
  cold+=("$(build "$scratch/work" "cold$i")")
  echo "# bench edit $i" >>"$stages/$last/apply.sh"
  warm+=("$(build "$scratch/work" "warm$i")")
  grep -q "$last .*ran (stage files changed)" "$scratch/warm$i.out" || {
    echo "warm build $i did not rerun $last alone:" >&2
    cat "$scratch/warm$i.out" >&2
    exit 1
  }
  if grep -E '^  [0-9]{2}-' "$scratch/warm$i.out" | grep -v "$last" | grep -q ' ran '; then
    echo "warm build $i reran more than $last:" >&2
    cat "$scratch/warm$i.out" >&2
    exit 1
  fi
  echo "run $i: cold ${cold[-1]} s, warm ${warm[-1]} s" >&2
done
unchanged=$(build "$scratch/work" unchanged)
fresh=$(build "$scratch/fresh-work" fresh)

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
c=$(median "${cold[@]}")
w=$(median "${warm[@]}")
echo
echo "warm build (last stage changed), the last run:"
grep -E 'archive .*entries' "$scratch/warm$runs.err" || true
cat "$scratch/warm$runs.out"
echo
printf '%-50s %9s\n' "build (medians of $runs)" seconds
printf '%-50s %9.1f\n' "cold: empty layer cache, base cached" "$c"
printf '%-50s %9.1f\n' "warm: last stage changed, same work dir" "$w"
printf '%-50s %9.1f\n' "nothing changed, same work dir (1 run)" "$unchanged"
printf '%-50s %9.1f\n' "new work dir, every layer from the cache (1 run)" "$fresh"
awk -v c="$c" -v w="$w" 'BEGIN { printf "warm / cold = %.1f%% (goal: under 5%%)\n", 100 * w / c }'
