#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Package sources with updates and security pockets, no recommends, then a full upgrade.
# The mirror is whatever the bootstrap used (its own default, or --mirror): never named here.

sources=$chroot/etc/apt/sources.list
mirror_url=$(awk '$1 == "deb" { print $2; exit }' "$sources" 2>/dev/null || true)
[ -n "$mirror_url" ] || fail "no 'deb' line in /etc/apt/sources.list to take the mirror from"

add_source() {
  # add_source URL SUITE: one line per suite, with the OS's components.
  if ! grep -qE "^deb [^ ]+ $2 " "$sources"; then
    echo "deb $1 $2 $os_components" >>"$sources"
  fi
}

# The base line must carry every component of the OS definition.
sed -i -E "s|^deb ([^ ]+) $os_suite( .*)?$|deb \1 $os_suite $os_components|" "$sources"
add_source "$mirror_url" "$os_suite-updates"
case "${security_mirror:-}" in
  none) ;;
  "")
    if [ "$os_name" = ubuntu ]; then
      add_source "$mirror_url" "$os_suite-security"
    elif [[ $mirror_url == */debian ]]; then
      # Debian's archive serves the security suite beside itself.
      add_source "${mirror_url%/debian}/debian-security" "$os_suite-security"
    else
      fail "cannot derive the security mirror from $mirror_url: pass --set security_mirror=URL (or =none)"
    fi
    ;;
  *) add_source "$security_mirror" "$os_suite-security" ;;
esac

cat >"$chroot/etc/apt/apt.conf.d/90stemcell" <<'CONF'
// written by the base_apt stage
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
CONF

run_in_chroot "$chroot" "
  apt-get update -q
  apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade
  apt-get clean
"
