//! The stemcell tarball: its members in the order BOSH expects, gzip (directors read gzip only;
//! block-parallel, see `crate::archive::gzip`), written under a temporary name and renamed when
//! complete.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::output::PendingOutput;

/// The members of a stemcell, in order.
pub const MEMBERS: [&str; 6] = [
    "stemcell.MF",
    "packages.txt",
    "dev_tools_file_list.txt",
    "image",
    "sbom.spdx.json",
    "sbom.cdx.json",
];

/// A gzip tar of `files` (name in the archive, path on disk), in the given order.
pub fn write_tgz(output: &Path, files: &[(String, PathBuf)]) -> Result<PathBuf> {
    let pending = PendingOutput::new(output)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let gzip = crate::archive::gzip::BlockGzipWriter::new(
        BufWriter::with_capacity(1 << 20, pending.file()?),
        crate::archive::pack::DEFAULT_GZIP_LEVEL,
        threads,
        None,
    )
    .context("starting the gzip compressor")?;
    let mut tar = tar::Builder::new(gzip);
    let time = crate::archive::build_time();
    for (name, path) in files {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(file.metadata()?.len());
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(time);
        header.set_entry_type(tar::EntryType::Regular);
        // Ctrl-C or SIGTERM stops the copy; the pending file is removed when this returns.
        tar.append_data(&mut header, name, crate::archive::Interruptible(&mut file))
            .map_err(|e| crate::fsutil::io_error(e, "writing", output))?;
    }
    let gzip = tar
        .into_inner()
        .map_err(|e| crate::fsutil::io_error(e, "writing", output))?;
    gzip.finish().map_err(|e| {
        crate::fsutil::explain_disk_full(anyhow!("finishing {}: {e}", output.display()), output)
    })?;
    pending.commit()
}
