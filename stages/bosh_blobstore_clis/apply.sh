#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# The agent's blobstore clients at /var/vcap/bosh/bin/bosh-blobstore-* (dav, s3, gcs,
# azure-storage: the agent calls them by these names), from the directory the setting
# blobstore_clis_dir names (`--set blobstore_clis_dir=DIR`; the Concourse task passes its
# blobstore-clis input). Without the setting the stemcell has none, and says so.

dir=${blobstore_clis_dir:-}
if [ -z "$dir" ]; then
  echo "no blobstore_clis_dir setting: no bosh-blobstore-* clients installed"
  exit 0
fi
assert_dir blobstore_clis_dir
# Checked and written inside the tree (write_file): a link in the tree's /var/vcap is never
# followed on the build host.
run_in_chroot "$chroot" '[ -d /var/vcap/bosh/bin ]' ||
  fail "the tree has no /var/vcap/bosh/bin directory: run bosh_go_agent first"
installed=0
for cli in "$dir"/bosh-blobstore-*; do
  # Regular files only: a symlink in the input could point anywhere on the build host.
  if [ ! -f "$cli" ] || [ -L "$cli" ]; then
    continue
  fi
  name=$(basename "$cli")
  write_file "/var/vcap/bosh/bin/$name" 0755 <"$cli"
  echo "installed $name"
  installed=$((installed + 1))
done
[ "$installed" -gt 0 ] || fail "blobstore_clis_dir $dir holds no bosh-blobstore-* file: name each client bosh-blobstore-dav, bosh-blobstore-s3, bosh-blobstore-gcs or bosh-blobstore-azure-storage"
