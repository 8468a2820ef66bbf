#!/usr/bin/env bash
# Lints every shell file of the project with shellcheck (settings in .shellcheckrc): the stage
# scripts, the prelude, shell assets of stages, scripts/, benches/ and CI. .ci/run runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v shellcheck >/dev/null || {
  echo "scripts/shellcheck.sh: shellcheck is not installed: run scripts/install.sh --deps-only" >&2
  exit 1
}
dirs=()
for dir in stages scripts benches .ci ci; do
  if [ -d "$dir" ]; then dirs+=("$dir"); fi
done
files=()
while IFS= read -r -d '' file; do
  case "$file" in
    *.sh | *.bash) files+=("$file") ;;
    *) if head -n1 "$file" | grep -qE '^#!.*\b(ba)?sh\b'; then files+=("$file"); fi ;;
  esac
done < <(find "${dirs[@]}" -type f ! -path '.ci/venv/*' -print0 | sort -z)
[ "${#files[@]}" -gt 0 ] || { echo "scripts/shellcheck.sh: no shell files found" >&2; exit 1; }
shellcheck -x "${files[@]}"
echo "shellcheck: ${#files[@]} files clean"
