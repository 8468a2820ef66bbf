# shellcheck shell=bash
# Functions every stage script gets (sourced by prelude_apply.bash and prelude_config.bash).
# The builder exports: work, chroot, assets_dir, settings_file, base_dir, lib_dir, stage_name,
# stemcell_builder (its own binary), and every build setting (os_name, os_version, arch, ...).
#
# A stage runs on the host, but the tree it changes may come from someone else (build-stemcell
# unpacks OS images from S3): any directory of it may be a symlink to a host path. So a stage
# never writes, edits or deletes through "$chroot/..." on the host side: it does so inside the
# tree, with run_in_chroot or the helpers below (write_file, install_file, set_config_option),
# where every path resolves inside the tree.

fail() {
  printf '%s: %s\n' "${stage_name:-stage}" "$*" >&2
  exit 1
}

# run_in_chroot [--CHROOT-EXEC-FLAG...] CHROOT SCRIPT [ARG...]: runs SCRIPT inside CHROOT with
# bash -euo pipefail (sh with the same options where the tree has no bash), ARGs as $1...
# Namespaces, mounts and process clean-up are the binary's job (chroot-exec), not ours. stdin
# is passed through. Leading flags go to chroot-exec (--no-resolv-conf).
run_in_chroot() {
  local flags=()
  while [ "${1:-}" != "${1#--}" ]; do
    flags+=("$1")
    shift
  done
  local root=$1 script=$2
  shift 2
  local builder=${stemcell_builder:?the builder exports stemcell_builder}
  if [ -e "$root/bin/bash" ] || [ -e "$root/usr/bin/bash" ]; then
    "$builder" chroot-exec "${flags[@]}" "$root" -- /bin/bash -euo pipefail -c "$script" run_in_chroot "$@"
  else
    "$builder" chroot-exec "${flags[@]}" "$root" -- /bin/sh -eu -c "set -o pipefail 2>/dev/null || true
$script" run_in_chroot "$@"
  fi
}

# apt_update: fresh package lists for the chroot's sources. With the package cache
# ($package_cache_dir, the build's --cache-dir), the lists it kept for the same sources go in
# first, so apt fetches only what changed, and the new ones are kept for the next build; with
# --offline ($offline) the kept lists are used as they are and nothing is fetched.
apt_update() {
  if [ -n "${package_cache_dir:-}" ]; then
    "$stemcell_builder" package-cache lists-in "$chroot" --cache-dir "$package_cache_dir" \
      --arch "${arch:?}" ${offline:+--offline}
  fi
  if [ -n "${offline:-}" ]; then return 0; fi
  run_in_chroot "$chroot" 'apt-get update -q'
  if [ -n "${package_cache_dir:-}" ]; then
    "$stemcell_builder" package-cache lists-out "$chroot" --cache-dir "$package_cache_dir" --arch "$arch"
  fi
}

# What pkg_mgr runs in the chroot to learn what apt is about to download: apt-get --print-uris
# (which names each file with its MD5), then the index's stanza of each of those packages
# (apt-cache show NAME:ARCH=VERSION, NAME=VERSION for arch all), which holds its SHA256.
# shellcheck disable=SC2016
_pkg_mgr_plan='action=$1
  shift
  uris=$(apt-get --print-uris -qq -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$action" "$@")
  printf "%s\n\n" "$uris"
  specs=$(printf "%s\n" "$uris" | while read -r _ file _; do
    case $file in *_*_*.deb) ;; *) continue ;; esac
    stem=${file%.deb}
    name=${stem%%_*} rest=${stem#*_}
    version=${rest%_*} arch=${rest##*_}
    version=${version//%3a/:}
    if [ "$arch" = all ]; then echo "$name=$version"; else echo "$name:$arch=$version"; fi
  done)
  if [ -n "$specs" ]; then apt-cache show --no-all-versions $specs || true; fi'

# pkg_mgr ACTION PKG...: apt-get ACTION in the chroot, non-interactive, without recommends,
# keeping existing config files. First finishes what an interrupted dpkg left half-configured
# (a stage killed mid-install, then resumed); fetches package lists only when there are none.
# With the package cache, the packages apt is about to download come from it when it has them
# (the very file the index names: same name, version, architecture and hash), what apt
# downloaded is kept there, and the chroot's apt archive is emptied again; --offline downloads
# nothing and stops, naming the first package the cache lacks.
pkg_mgr() {
  run_in_chroot "$chroot" 'dpkg --configure -a'
  if ! run_in_chroot "$chroot" 'ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1'; then
    apt_update
  fi
  local apt='action=$1
    shift
    exec apt-get -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ${apt_options:-} "$action" "$@"'
  if [ -n "${package_cache_dir:-}" ]; then
    local uris
    uris=$(mktemp "$work/apt-uris.XXXXXX")
    if ! run_in_chroot "$chroot" "$_pkg_mgr_plan" "$@" >"$uris"; then
      rm -f "$uris"
      fail "apt-get --print-uris $* failed"
    fi
    if ! "$stemcell_builder" package-cache provide "$chroot" --cache-dir "$package_cache_dir" \
      --arch "${arch:?}" --uris "$uris" ${offline:+--offline}; then
      rm -f "$uris"
      exit 1
    fi
    rm -f "$uris"
  fi
  run_in_chroot "$chroot" "apt_options=${offline:+--no-download}; $apt" "$@"
  if [ -n "${package_cache_dir:-}" ]; then
    "$stemcell_builder" package-cache store "$chroot" --cache-dir "$package_cache_dir"
  fi
  run_in_chroot "$chroot" 'apt-get clean'
}

# write_file PATH [MODE [OWNER:GROUP]]: stdin becomes PATH in the tree (default 0644 root:root).
# Written inside the tree to a temp name and renamed, so a symlink at PATH is replaced, never
# followed, and a failure leaves the old file.
write_file() {
  run_in_chroot "$chroot" '
    path=$1 mode=${2:-0644} owner=${3:-root:root}
    case "$path" in /*) ;; *) echo "write_file: $path is not absolute" >&2; exit 1 ;; esac
    if [ -d "$path" ] && [ ! -L "$path" ]; then echo "write_file: $path is a directory" >&2; exit 1; fi
    mkdir -p "$(dirname "$path")"
    tmp=$(mktemp "$path.XXXXXX")
    trap "rm -f \"$tmp\"" EXIT
    cat >"$tmp"
    chown "$owner" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$path"
    trap - EXIT
  ' "$@"
}

# install_file SOURCE PATH [MODE [OWNER:GROUP]]: a host file (an asset) installed into the tree.
install_file() {
  local source=$1
  shift
  [ -f "$source" ] || fail "$source is missing"
  write_file "$@" <"$source"
}

# add_on_exit COMMAND...: runs COMMAND when the stage exits, last added first.
declare -a _on_exit_commands=()
_run_on_exit() {
  local i
  for ((i = ${#_on_exit_commands[@]} - 1; i >= 0; i--)); do
    eval "${_on_exit_commands[$i]}" || true
  done
}
add_on_exit() {
  _on_exit_commands+=("$*")
  if [ "${#_on_exit_commands[@]}" -eq 1 ]; then
    trap _run_on_exit EXIT
  fi
}

assert_available() {
  command -v "$1" >/dev/null || fail "$1 is not available: install it on the build host"
}

assert_value() {
  [ -n "${!1:-}" ] || fail "\$$1 is empty: set it with --set $1=VALUE"
}

assert_dir() {
  assert_value "$1"
  [ -d "${!1}" ] || fail "\$$1 (${!1}) is not a directory"
}

assert_file() {
  assert_value "$1"
  [ -f "${!1}" ] || fail "\$$1 (${!1}) is not a file"
}

# set_config_option PATH KEY VALUE [SEPARATOR]: in the tree's file PATH, drops every line
# setting KEY (commented or not) and appends "KEY<SEP>VALUE", so the file states each option
# exactly once.
set_config_option() {
  run_in_chroot "$chroot" '
    file=$1 key=$2 value=$3 sep=${4:- }
    touch "$file"
    sed -i -E "/^[#[:space:]]*${key}([[:space:]]|=|\$)/d" "$file"
    if [ -s "$file" ] && [ -n "$(tail -c1 "$file")" ]; then echo >>"$file"; fi
    printf "%s%s%s\n" "$key" "$sep" "$value" >>"$file"
  ' "$@"
}

# remove_build_leftovers ROOT: what a build leaves and an image must not carry: package caches
# and lists, the build host's resolver settings (the bootstrap copied them), temp files, the
# build's own runtime dirs. Logs are emptied, not deleted: files that daemons own (rsyslog's,
# owned by syslog, mode 0600) keep their owner and mode. All of it inside the tree.
remove_build_leftovers() {
  # --no-resolv-conf: the host's resolv.conf is not bound over the tree's, so this empties the
  # tree's own.
  run_in_chroot --no-resolv-conf "$1" '
    apt-get clean
    # Only real directories are emptied: a link (even one resolving inside the tree) is left.
    if [ -d /var/lib/apt/lists ] && [ ! -L /var/lib/apt/lists ]; then
      find /var/lib/apt/lists -mindepth 1 -maxdepth 1 ! -name partial -exec rm -rf {} +
      mkdir -p /var/lib/apt/lists/partial
    fi
    if [ -f /etc/resolv.conf ] && [ ! -L /etc/resolv.conf ]; then : >/etc/resolv.conf; fi
    for dir in /tmp /var/tmp; do
      if [ -d "$dir" ] && [ ! -L "$dir" ]; then find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +; fi
    done
    rm -rf /run/sshd
    if [ -d /var/log ] && [ ! -L /var/log ]; then
      find /var/log -type f \( -name "*.[0-9]" -o -name "*.old" -o -name "*.gz" -o -name "*.xz" -o -name "*.zst" \) -delete
      find /var/log -type f -exec truncate -s 0 {} +
    fi
  '
}
