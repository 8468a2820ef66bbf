#!/usr/bin/env bash
# shellcheck source=../lib/prelude_apply.bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# monit and runit laid out where the BOSH agent expects them: the agent supervises monit through
# runit, so neither starts anything at boot by itself.
#
# monit is the reference's: 5.2.5, built from its release tarball (assets/monit-5.2.5.tar.gz,
# GPL-3, as the reference ships it) with the /var/vcap/bosh prefix. The agent is written against
# it (bosh-agent jobsupervisor/monit): it starts and stops jobs with plain POSTs to monit's HTTP
# interface, which every monit since 5.24 refuses without a CSRF token ("403 Invalid CSRF
# Token": Debian's 5.34 cannot start a job), and runs `monit stop -g vcap` with no -c, which
# this build answers from /var/vcap/bosh/etc/monitrc. /var/vcap/bosh/bin/monit is a wrapper
# (as the reference's) and the binary is monit-actual.
#
# What the agent does with it (servicemanager/sv_service_manager.go): it links /etc/service/monit
# to /etc/sv/monit and runs `sv start monit` (bootstrap stops after ten failures), and reloads it
# with `sv kill`/`sv start`.
#
# Debian ships no unit that runs runsvdir under systemd: runit.service is ours, where the
# reference puts it (/lib/systemd/system, reached through the merged /usr), running
# /usr/sbin/runsvdir-start as the reference's does.

monit_sha256=3c2496e9f653ff8a46b75b61126a86cb3861ad35e4eeb7379d64a0fc55c1fd8d
# flex and bison only to build it: removed again below when the tree did not have them.
build_deps=$(run_in_chroot "$chroot" 'for p in flex bison; do dpkg-query -W -f="\${db:Status-Status}" "$p" 2>/dev/null | grep -qx installed || printf "%s " "$p"; done')
pkg_mgr install runit gcc make libc6-dev flex bison
install_file "$assets_dir/monit-5.2.5.tar.gz" /var/vcap/bosh/src/monit-5.2.5.tar.gz 0644
run_in_chroot "$chroot" '
  cd /var/vcap/bosh/src
  echo "$1  monit-5.2.5.tar.gz" | sha256sum -c --quiet
  tar xzf monit-5.2.5.tar.gz
  cd monit-5.2.5
  # gcc 10+ wants -fcommon for its globals; gcc 14 makes these old-C warnings errors.
  ./configure --prefix=/var/vcap/bosh --without-ssl \
    CFLAGS="-O2 -fcommon -Wno-error=implicit-function-declaration -Wno-error=incompatible-pointer-types -Wno-error=int-conversion -Wno-error=implicit-int" >/dev/null
  make -j"$(nproc)" >/dev/null
  make install >/dev/null
  mv -f /var/vcap/bosh/bin/monit /var/vcap/bosh/bin/monit-actual
  cd /
  rm -rf /var/vcap/bosh/src
' "$monit_sha256"
if [ -n "$build_deps" ]; then
  # shellcheck disable=SC2086 # a list of names
  run_in_chroot "$chroot" "apt-get -y -q purge --auto-remove $build_deps"
fi
install_file "$assets_dir/monitrc" /var/vcap/bosh/etc/monitrc 0700
install_file "$assets_dir/monit" /var/vcap/bosh/bin/monit 0755
install_file "$assets_dir/monit-run" /etc/sv/monit/run 0755
install_file "$assets_dir/monit-log-run" /etc/sv/monit/log/run 0755
# runsv keeps a service with a `down` file stopped until `sv start`: the agent's to start.
write_file /etc/sv/monit/down 0644 </dev/null
install_file "$assets_dir/runsvdir-start" /usr/sbin/runsvdir-start 0750
install_file "$assets_dir/runit.service" /usr/lib/systemd/system/runit.service 0644
run_in_chroot "$chroot" '
  mkdir -p /var/vcap/bosh/bin /var/vcap/monit/job /var/vcap/monit/svlog
  # monit refuses to start without an include file present.
  touch /var/vcap/monit/empty.monitrc
  # runit supervises what /etc/service holds (Debian may ship it as a link into /etc/runit).
  [ -e /etc/service ] || [ -L /etc/service ] || mkdir -p /etc/service
  systemctl enable runit.service
'
