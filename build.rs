//! Records the commit the binary is built from (`STEMCELL_BUILDER_COMMIT`), so an installed
//! binary whose stages are not in a git checkout still names its own commit in the stemcells it
//! builds (`/var/vcap/bosh/etc/stemcell_git_sha1`). Nothing is set outside a checkout.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-c", "safe.directory=*"])
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        // A new commit or checkout changes HEAD or the ref it names.
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{reference}");
        }
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(sha) = git(&["rev-parse", "HEAD"]).filter(|s| s.len() == 40) {
        println!("cargo:rustc-env=STEMCELL_BUILDER_COMMIT={sha}");
    }
}
