#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# GRUB for the disk's firmware (the setting firmware: bios, or efi for vSphere); disk-image
# installs it onto the disk (image_disk) and writes its config.

case "$arch:${firmware:-bios}" in
  amd64:bios | i386:bios) pkg_mgr install grub-pc ;;
  # The EFI modules and grub-install/update-grub, without grub-efi-amd64's postinst, which
  # would install into the build's /boot/efi: disk-image installs onto the disk's ESP.
  amd64:efi) pkg_mgr install grub-efi-amd64-bin grub2-common ;;
  *) fail "disk images boot with BIOS GRUB on amd64/i386 or EFI GRUB on amd64, not $arch with ${firmware:-bios}" ;;
esac
install_file "$assets_dir/50-stemcell.cfg" /etc/default/grub.d/50-stemcell.cfg 0644

# A GRUB superuser whose password nobody knows: a random one made here, hashed, and dropped, never
# stored or shown. At the console nobody can edit a boot entry or reach GRUB's shell to start a
# root shell (the reference's STIG V-38585, `password_pbkdf2 vcap` in grub.cfg), while every
# entry of ours boots unattended (--unrestricted on the entries 10_linux writes). A rebuilt
# layer gets a new password; a cached one keeps the hash it made.
run_in_chroot "$chroot" '
  password=$(head -c 30 /dev/urandom | base64)
  hash=$(printf "%s\n%s\n" "$password" "$password" | grub-mkpasswd-pbkdf2 |
    sed -n "s/^.* is \(grub\.pbkdf2\.sha512\.[0-9]*\.[0-9A-F]*\.[0-9A-F]*\)$/\1/p")
  unset password
  [ -n "$hash" ] || { echo "grub-mkpasswd-pbkdf2 printed no hash" >&2; exit 1; }
  script=/etc/grub.d/01_stemcell_superuser
  tmp=$(mktemp "$script.XXXXXX")
  trap "rm -f \"$tmp\"" EXIT
  printf "%s\n" "#!/bin/sh" \
    "# written by stemcell-builder (system_grub): the boot menu cannot be edited; its entries boot." \
    "cat <<GRUB" "set superusers=\"vcap\"" "password_pbkdf2 vcap $hash" "GRUB" >"$tmp"
  chmod 0700 "$tmp"
  mv -f "$tmp" "$script"
  trap - EXIT
  # 10_linux passes $CLASS to every menuentry it writes; the submenu of other kernels and
  # recovery entries stay restricted.
  sed -i "s/^CLASS=\"--class gnu-linux --class gnu --class os\"$/CLASS=\"--class gnu-linux --class gnu --class os --unrestricted\"/" /etc/grub.d/10_linux
  grep -q "^CLASS=\".*--unrestricted\"$" /etc/grub.d/10_linux ||
    { echo "/etc/grub.d/10_linux has no CLASS line of the form this stage edits" >&2; exit 1; }
'
