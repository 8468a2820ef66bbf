# Functions every stage script gets (sourced by prelude_apply.bash and prelude_config.bash).
# The builder exports: work, chroot, assets_dir, settings_file, base_dir, lib_dir, stage_name,
# stemcell_builder (its own binary), and every build setting (os_name, os_version, arch, ...).

fail() {
  printf '%s: %s\n' "${stage_name:-stage}" "$*" >&2
  exit 1
}

# run_in_chroot CHROOT SCRIPT: runs SCRIPT with bash -e (sh when the tree has no bash) inside
# CHROOT. Namespaces, mounts and process clean-up are the binary's job (chroot-exec), not ours.
run_in_chroot() {
  local root=$1 script=$2 shell=/bin/bash
  if [ ! -e "$root/bin/bash" ] && [ ! -e "$root/usr/bin/bash" ]; then
    shell=/bin/sh
  fi
  "${stemcell_builder:?the builder exports stemcell_builder}" chroot-exec "$root" -- "$shell" -e -c "$script"
}

# pkg_mgr ACTION PKG...: apt-get ACTION in the chroot, non-interactive, without recommends,
# keeping existing config files. Fetches package lists only when there are none.
pkg_mgr() {
  local action=$1
  shift
  local packages
  packages=$(printf ' %q' "$@")
  run_in_chroot "$chroot" "
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then apt-get update -q; fi
    apt-get -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ${action}${packages}
    apt-get clean
  "
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

# set_config_option FILE KEY VALUE [SEPARATOR]: drops every line setting KEY (commented or not)
# and appends "KEY<SEP>VALUE", so the file states each option exactly once.
set_config_option() {
  local file=$1 key=$2 value=$3 sep=${4:- }
  touch "$file"
  sed -i -E "/^[#[:space:]]*${key}([[:space:]]|=|$)/d" "$file"
  if [ -s "$file" ] && [ -n "$(tail -c1 "$file")" ]; then echo >>"$file"; fi
  printf '%s%s%s\n' "$key" "$sep" "$value" >>"$file"
}

# remove_build_leftovers ROOT: what a build leaves and an image must not carry: package caches
# and lists, the build host's resolver settings (the bootstrap copied them), temp files, logs.
remove_build_leftovers() {
  local root=$1
  run_in_chroot "$root" 'apt-get clean'
  rm -rf "$root"/var/lib/apt/lists/*
  mkdir -p "$root/var/lib/apt/lists/partial"
  if [ -f "$root/etc/resolv.conf" ] && [ ! -L "$root/etc/resolv.conf" ]; then
    : >"$root/etc/resolv.conf"
  fi
  rm -rf "$root"/tmp/* "$root"/var/tmp/*
  find "$root/var/log" -type f \( -name '*.log' -o -name '*.gz' -o -name '*.[0-9]' \) -delete
}
