//! Outputs are written under a temporary name in the destination directory and renamed only
//! when complete, so an interrupted or failed build never leaves a file under the final name.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

use crate::fsutil::io_error;

pub struct PendingOutput {
    temp: NamedTempFile,
    final_path: PathBuf,
}

impl PendingOutput {
    pub fn new(final_path: &Path) -> Result<Self> {
        if final_path.is_dir() {
            anyhow::bail!(
                "{} is a directory: name the file to write, e.g. {}",
                final_path.display(),
                final_path.join("os-image.tgz").display()
            );
        }
        let dir = match final_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "output directory {} does not exist: create it or choose another --output",
                dir.display()
            );
        }
        let name = final_path
            .file_name()
            .with_context(|| format!("{} is not a file name", final_path.display()))?
            .to_string_lossy()
            .into_owned();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| io_error(e, "creating a temporary file in", &dir))?;
        Ok(Self {
            temp,
            final_path: final_path.to_path_buf(),
        })
    }

    pub fn file(&self) -> Result<File> {
        self.temp
            .as_file()
            .try_clone()
            .context("duplicating output file handle")
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let path = self.final_path.clone();
        self.temp
            .write_all(data)
            .map_err(|e| io_error(e, "writing", &path))
    }

    /// Flushes to disk and gives the file its final name.
    pub fn commit(self) -> Result<PathBuf> {
        let final_path = self.final_path.clone();
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| io_error(e, "writing", &final_path))?;
        let file = self
            .temp
            .persist(&final_path)
            .map_err(|e| io_error(e.error, "renaming into", &final_path))?;
        // Readable like a file made with the default umask, not 0600 like a temp file.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        Ok(final_path)
    }
}

/// Writes `data` to `path` atomically.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let mut pending = PendingOutput::new(path)?;
    pending.write_all(data)?;
    pending.commit()?;
    Ok(())
}

/// `print!` that returns an error instead of panicking when standard output is closed or full
/// (`| head -1`, `>/dev/full`): the caller's `?` turns it into the one-line error, and `main`
/// ends quietly on a closed pipe, as other command-line tools do.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` with `out!`'s handling of a closed or full standard output.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to standard output and flushes, so a full device is reported here and not lost.
pub fn write_stdout(text: std::fmt::Arguments) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.flush())
        .context("writing to standard output")
}

/// Whether `err` is a write to a pipe whose reader has gone: not worth an error message.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
