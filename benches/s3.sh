#!/usr/bin/env bash
# Uploads and downloads a ~500 MB file against a local SeaweedFS with our commands and with the
# AWS CLI, three runs each, and prints throughput and ratios. Usage: benches/s3.sh [FILE]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${STEMCELL_BUILDER:-$repo/target/release/stemcell-builder}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --locked)
venv=$repo/.ci/venv
[ -x "$venv/bin/weed" ] || { echo "run scripts/install.sh --deps-only first (SeaweedFS)" >&2; exit 1; }
[ -x "$venv/bin/aws" ] || "$venv/bin/pip" install -q awscli

scratch=$(mktemp -d /var/tmp/sb-s3-bench.XXXX)
file=${1:-$scratch/os-image.tgz}
if [ ! -f "$file" ]; then
  head -c 500000000 /dev/urandom >"$file"
fi
size=$(stat -c %s "$file")

cat >"$scratch/s3.json" <<'JSON'
{"identities":[{"name":"bench","credentials":[{"accessKey":"benchaccesskey","secretKey":"benchsecretkey123456"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
base=24000
"$venv/bin/weed" mini -dir="$scratch/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=$base \
  -filer.port=$((base + 1)) -volume.port=$((base + 2)) -s3.port=$((base + 3)) -admin.port=$((base + 5)) \
  -s3.config="$scratch/s3.json" -master.telemetry=false -webdav=false -admin.ui=false \
  -s3.port.iceberg=0 -s3.port.lance=0 -bucket=bench >"$scratch/weed.log" 2>&1 &
weed_pid=$!
trap 'kill $weed_pid 2>/dev/null; wait $weed_pid 2>/dev/null; rm -rf "$scratch"; for p in $(seq $base $((base + 5))) $(seq $((base + 10000)) $((base + 10005))); do rm -f /tmp/seaweedfs-*-$p.sock; done' EXIT

endpoint=http://127.0.0.1:$((base + 3))
export AWS_ACCESS_KEY_ID=benchaccesskey AWS_SECRET_ACCESS_KEY=benchsecretkey123456 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=$scratch/aws-config
printf '[default]\ns3 =\n  addressing_style = path\n' >"$AWS_CONFIG_FILE"
for _ in $(seq 1 100); do
  "$venv/bin/aws" --endpoint-url "$endpoint" s3 cp - s3://bench/.ready <<<"ok" >/dev/null 2>&1 && break
  sleep 0.3
done

median() { sort -n | sed -n 2p; }
calc() { awk "BEGIN { print $* }"; }
timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); calc "$e - $s"; }
measure() { for _ in 1 2 3; do timed "$@"; rm -f "$scratch/down" "$scratch/down.sha256"; done | median; }

ours_up=$(measure "$bin" upload-os-image "$file" s3://bench/ours.tgz --endpoint "$endpoint" --path-style)
aws_up=$(measure "$venv/bin/aws" --endpoint-url "$endpoint" s3 cp "$file" s3://bench/aws.tgz)
ours_down=$(measure "$bin" download-os-image s3://bench/ours.tgz "$scratch/down" --endpoint "$endpoint" --path-style)
aws_down=$(measure "$venv/bin/aws" --endpoint-url "$endpoint" s3 cp s3://bench/aws.tgz "$scratch/down")

mb=$(calc "$size / 1000000")
printf 'file: %.0f MB, server: SeaweedFS on 127.0.0.1, medians of 3\n' "$mb"
printf '%-32s %8s %9s %14s\n' command seconds MB/s "vs aws s3 cp"
printf '%-32s %8.2f %9.1f %13.2fx\n' "aws s3 cp (upload)" "$aws_up" "$(calc "$mb / $aws_up")" 1
printf '%-32s %8.2f %9.1f %13.2fx\n' "upload-os-image" "$ours_up" "$(calc "$mb / $ours_up")" "$(calc "$aws_up / $ours_up")"
printf '%-32s %8.2f %9.1f %13.2fx\n' "aws s3 cp (download)" "$aws_down" "$(calc "$mb / $aws_down")" 1
printf '%-32s %8.2f %9.1f %13.2fx\n' "download-os-image" "$ours_down" "$(calc "$mb / $ours_down")" "$(calc "$aws_down / $ours_down")"
echo "(ours includes computing and checking the sha256; ratios: times faster than aws s3 cp)"
