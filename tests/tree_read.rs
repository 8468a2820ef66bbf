//! Files read from a tree on the host side (os-release, the dpkg database) are read as the
//! tree sees them: symlinks resolved inside it, never the host's files, values unquoted the
//! way os-release(5) writes them.

use std::fs;
use std::os::unix::fs::symlink;

use stemcell_builder::os::{os_release, parse_os_release};
use stemcell_builder::packages;

#[test]
fn os_release_is_read_inside_the_tree_with_quotes_and_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::write(
        root.join("usr/lib/os-release"),
        "# comment\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID='debian'\n\
         VERSION_CODENAME=trixie\nNAME=\"say \\\"hi\\\" \\$x\"\nnot a line\n",
    )
    .unwrap();
    // Debian's own layout: a relative link.
    symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    assert_eq!(
        os_release(&root).unwrap(),
        ("debian".to_string(), "trixie".to_string())
    );
    let fields = parse_os_release(&fs::read_to_string(root.join("usr/lib/os-release")).unwrap());
    assert!(
        fields.contains(&("NAME".into(), "say \"hi\" $x".into())),
        "{fields:?}"
    );
    assert!(fields.contains(&("PRETTY_NAME".into(), "Debian GNU/Linux 13 (trixie)".into())));

    // An absolute link to a host file names that path inside the tree, where there is none.
    let host = dir.path().join("host-os-release");
    fs::write(&host, "ID=hostos\nVERSION_CODENAME=hostcode\n").unwrap();
    fs::remove_file(root.join("etc/os-release")).unwrap();
    symlink(&host, root.join("etc/os-release")).unwrap();
    fs::remove_file(root.join("usr/lib/os-release")).unwrap();
    let err = os_release(&root).unwrap_err().to_string();
    assert!(err.contains("--os NAME-VERSION"), "{err}");
    // A link to itself (the tree's own /etc/os-release) is a loop, said as such.
    fs::remove_file(root.join("etc/os-release")).unwrap();
    symlink("/etc/os-release", root.join("etc/os-release")).unwrap();
    let err = os_release(&root).unwrap_err().to_string();
    assert!(err.contains("symlink loop"), "{err}");

    // A FIFO is refused at once instead of hanging.
    fs::remove_file(root.join("etc/os-release")).unwrap();
    nix::unistd::mkfifo(
        &root.join("etc/os-release"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let err = os_release(&root).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn dpkg_status_linked_to_the_host_lists_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    let host = dir.path().join("host-status");
    fs::write(
        &host,
        "Package: hostonly\nStatus: install ok installed\nVersion: 1\n",
    )
    .unwrap();
    symlink(&host, root.join("var/lib/dpkg/status")).unwrap();
    assert!(packages::installed(&root).unwrap().is_empty());
}
