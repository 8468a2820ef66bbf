#!/bin/bash
# Runs inside the tree (run_in_chroot): configure-sources.sh SUITE COMPONENTS OS_NAME SECURITY
# SECURITY: "" derives the security mirror from the base entry's, "none" adds none, else a URL.
#
# The base entry is whatever the bootstrap wrote: mmdebstrap's "deb [arch=amd64] URL SUITE main"
# with --mirror, "deb URL SUITE main" without, "deb [signed-by=...] ..." with a keyring, or a
# deb822 paragraph. apt's own parser finds it (file and line or paragraph); this script then
# gives it every component, and adds the updates and security suites in the same file and form,
# with the same options (signed-by, arch), when apt does not already know them.
set -euo pipefail
suite=$1 components=$2 os_name=$3 security=$4

targets=$(apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE) $(REPO_URI) $(SOURCESENTRY)' | sort -u)
entry_of() { # entry_of SUITE: "REPO_URI FILE:N" of the first deb entry for SUITE, or nothing
  awk -v s="$1" '$1 == "deb" && $2 == s { print $3, $4; exit }' <<<"$targets"
}
base=$(entry_of "$suite")
[ -n "$base" ] || {
  echo "base_apt: the tree's apt sources have no 'deb' entry for $suite" >&2
  exit 1
}
read -r base_uri base_entry <<<"$base"
base_uri=${base_uri%/}

case "$security" in
  none) security_uri= ;;
  "")
    if [ "$os_name" = ubuntu ]; then
      security_uri=$base_uri
    elif [[ $base_uri == */debian ]]; then
      # Debian's archive serves the security suite beside itself.
      security_uri=${base_uri%/debian}/debian-security
    else
      echo "base_apt: cannot derive the security mirror from $base_uri: pass --set security_mirror=URL (or =none)" >&2
      exit 1
    fi
    ;;
  *) security_uri=${security%/} ;;
esac

# one_line FILE N [URI SUITE]: entry N of a one-line file with every component, optionally
# moved to another URI and suite; its options ("[arch=amd64 signed-by=...]") are kept as written.
one_line() {
  awk -v n="$2" -v uri="${3:-}" -v s="${4:-}" -v comps="$components" '
    NR == n {
      i = 2; opts = ""
      if ($2 ~ /^\[/) {
        opts = $2
        while (opts !~ /\]$/ && i < NF) { i++; opts = opts " " $i }
        i++
      }
      if (uri == "") uri = $i
      if (s == "") s = $(i + 1)
      print $1 (opts == "" ? "" : " " opts) " " uri " " s " " comps
    }' "$1"
}

# deb822 FILE N [URI SUITE]: paragraph N of a deb822 file with every component (and another
# URI and suite when given); other fields, Signed-By included, are kept.
deb822() {
  awk -v n="$2" -v uri="${3:-}" -v s="${4:-}" -v comps="$components" '
    BEGIN { par = 1; content = 0; skip = 0 }
    /^#/ { next }
    /^[ \t]*$/ { if (content) { par++; content = 0 }; next }
    {
      content = 1
      if (par != n) next
      if ($0 ~ /^[ \t]/) { if (!skip) print; next }
      skip = 0
      field = tolower(substr($0, 1, index($0, ":") - 1))
      if (field == "uris" && uri != "") { print "URIs: " uri; skip = 1; next }
      if (field == "suites" && s != "") { print "Suites: " s; skip = 1; next }
      if (field == "components") { print "Components: " comps; skip = 1; next }
      print
    }' "$1"
}

# replace_entry FILE N: entry N of FILE rewritten in place with every component.
replace_entry() {
  local file=$1 n=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  case "$file" in
    *.sources)
      awk -v n="$n" '
        BEGIN { par = 1; content = 0; done = 0 }
        /^[ \t]*$/ { if (content) { par++; content = 0 }; print; next }
        /^#/ { print; next }
        { content = 1 }
        par == n { if (!done) { while ((getline line < repl) > 0) print line; done = 1 }; next }
        { print }' repl=<(deb822 "$file" "$n") "$file" >"$tmp"
      ;;
    *) awk -v n="$n" 'NR == n { getline line < repl; print line; next } { print }' repl=<(one_line "$file" "$n") "$file" >"$tmp" ;;
  esac
  chmod --reference="$file" "$tmp"
  mv -f "$tmp" "$file"
}

# add_suite URI SUITE: a new entry beside the base entry, in its file and form.
add_suite() {
  local file=${base_entry%:*} n=${base_entry##*:} text
  case "$file" in
    *.sources) text=$(printf '\n'; deb822 "$file" "$n" "$1" "$2") ;;
    *) text=$(one_line "$file" "$n" "$1" "$2") ;;
  esac
  if [ -s "$file" ] && [ -n "$(tail -c1 "$file")" ]; then echo >>"$file"; fi
  printf '%s\n' "$text" >>"$file"
}

for wanted in "$suite" "$suite-updates" "$suite-security"; do
  existing=$(entry_of "$wanted")
  if [ -n "$existing" ]; then
    entry=${existing#* }
    replace_entry "${entry%:*}" "${entry##*:}"
  elif [ "$wanted" = "$suite-updates" ]; then
    add_suite "$base_uri" "$wanted"
  elif [ -n "$security_uri" ]; then
    add_suite "$security_uri" "$wanted"
  fi
  # Entries moved: ask apt again.
  targets=$(apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE) $(REPO_URI) $(SOURCESENTRY)' | sort -u)
done
