//! Packs a root tree into an OS image tarball.
//!
//! Entries are sorted byte-wise and directories precede their contents; owners are numeric;
//! mtimes are clamped to `SOURCE_DATE_EPOCH`; the gzip header carries no name and no time. So
//! the same tree always gives the same bytes. The walk holds one sorted directory listing per
//! level and the compressors work on bounded blocks, so memory does not grow with the tree.
//!
//! The walk stays on the root's filesystem (GNU tar's `--one-file-system`): a directory that is
//! a mount point is archived as an empty directory, so a `/proc`, a bind mount or a mounted
//! disk inside the tree never ends up in the image. Ctrl-C or SIGTERM stops it between two
//! reads with [`super::Interrupted`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use tar::{Builder, EntryType, Header};

use super::entry_name::{append_pax, set_link, set_name};
use super::gzip::{BlockGzipWriter, BlockStats, BlockStore};
use super::Compression;

/// libdeflate level 6: gzip's and pigz's default level number; at it libdeflate writes smaller
/// output than zlib does (so than `pigz -6`) in well under half of zlib's time.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

#[derive(Debug, Clone)]
pub struct PackOptions {
    pub compression: Compression,
    /// Clamp mtimes to this (from `SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<u64>,
    pub threads: usize,
    /// libdeflate's gzip level (see [`DEFAULT_GZIP_LEVEL`]).
    pub gzip_level: u32,
    pub zstd_level: i32,
    /// gzip only: keep the compressed blocks here and reuse those of the previous pack
    /// (`gzip::BlockStore`); the output bytes are the same with or without it.
    pub block_store: Option<PathBuf>,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            source_date_epoch: super::source_date_epoch(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            gzip_level: DEFAULT_GZIP_LEVEL,
            zstd_level: 3,
            block_store: None,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct PackSummary {
    pub entries: u64,
    pub data_bytes: u64,
    /// Sockets cannot live in a tar; they are recreated by whatever owns them at run time.
    pub skipped_sockets: u64,
    /// gzip: blocks compressed in all, and how many of them were reused from the block store.
    pub gzip_blocks: u64,
    pub reused_blocks: u64,
}

/// Packs `root` into `out`. `progress` is called with the file bytes archived so far.
pub fn pack<W: Write + Send + 'static>(
    root: &Path,
    out: W,
    options: &PackOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<PackSummary> {
    let root_meta =
        fs::symlink_metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if !root_meta.is_dir() {
        anyhow::bail!("{} is not a directory", root.display());
    }
    let compressor = Compressor::new(out, options)?;
    let mut walker = Walker {
        builder: Builder::new(compressor),
        options,
        hard_links: HashMap::new(),
        summary: PackSummary::default(),
        progress,
        root_dev: root_meta.dev(),
    };
    walker.builder.mode(tar::HeaderMode::Complete);
    let result = (|| -> Result<PackSummary> {
        walker.entry(root, b"./", &root_meta)?;
        walker.dir(root, b"./".to_vec())?;
        let mut summary = walker.summary.clone();
        check_interrupt(root)?;
        let compressor = std::mem::replace(&mut walker.builder, Builder::new(Compressor::Closed))
            .into_inner()
            .context("finishing the tar stream")?;
        if let Some(stats) = compressor.finish()? {
            summary.gzip_blocks = stats.blocks;
            summary.reused_blocks = stats.reused;
        }
        Ok(summary)
    })();
    // Whatever failed, an interrupt is the reason to report: the error it caused is noise.
    match result {
        Err(_) if crate::stage::process::interrupted() => Err(interrupted(root)),
        other => other,
    }
}

fn interrupted(root: &Path) -> anyhow::Error {
    anyhow::Error::new(super::Interrupted {
        what: format!("archiving {}", root.display()),
    })
}

fn check_interrupt(root: &Path) -> Result<()> {
    if crate::stage::process::interrupted() {
        return Err(interrupted(root));
    }
    Ok(())
}

struct Walker<'a, W: Write + Send + 'static> {
    builder: Builder<Compressor<W>>,
    options: &'a PackOptions,
    hard_links: HashMap<(u64, u64), Vec<u8>>,
    summary: PackSummary,
    progress: &'a mut dyn FnMut(u64),
    /// The root's filesystem: directories on another one are mount points, not descended.
    root_dev: u64,
}

impl<W: Write + Send + 'static> Walker<'_, W> {
    fn dir(&mut self, dir: &Path, prefix: Vec<u8>) -> Result<()> {
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        // Byte order, not locale order: the same tree must give the same archive anywhere.
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut archived = prefix.clone();
            archived.extend_from_slice(&name.into_vec());
            if meta.is_dir() {
                archived.push(b'/');
                self.entry(&path, &archived, &meta)?;
                if meta.dev() == self.root_dev {
                    self.dir(&path, archived)?;
                }
            } else {
                self.entry(&path, &archived, &meta)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, name: &[u8], meta: &Metadata) -> Result<()> {
        check_interrupt(path)?;
        let file_type = meta.file_type();
        if file_type.is_socket() {
            self.summary.skipped_sockets += 1;
            return Ok(());
        }
        let mut header = Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(meta.uid() as u64);
        header.set_gid(meta.gid() as u64);
        let mtime = meta.mtime().max(0) as u64;
        header.set_mtime(
            self.options
                .source_date_epoch
                .map_or(mtime, |epoch| mtime.min(epoch)),
        );
        header.set_size(0);

        let xattrs = read_xattrs(path)?;
        if !xattrs.is_empty() {
            append_pax(&mut self.builder, name, &xattrs).context("writing xattrs")?;
        }

        let add_err = |e: io::Error| crate::fsutil::io_error(e, "archiving", path);
        if file_type.is_dir() {
            header.set_entry_type(EntryType::Directory);
            self.append(header, name, io::empty()).map_err(add_err)?;
        } else if file_type.is_symlink() {
            let target =
                fs::read_link(path).with_context(|| format!("reading link {}", path.display()))?;
            header.set_entry_type(EntryType::Symlink);
            set_link(
                &mut self.builder,
                &mut header,
                target.as_os_str().as_bytes(),
            )
            .map_err(add_err)?;
            self.append(header, name, io::empty()).map_err(add_err)?;
        } else if meta.nlink() > 1 && self.hard_links.contains_key(&(meta.dev(), meta.ino())) {
            let first = self.hard_links[&(meta.dev(), meta.ino())].clone();
            header.set_entry_type(EntryType::Link);
            set_link(&mut self.builder, &mut header, &first).map_err(add_err)?;
            self.append(header, name, io::empty()).map_err(add_err)?;
        } else if file_type.is_file() {
            if meta.nlink() > 1 {
                self.hard_links
                    .insert((meta.dev(), meta.ino()), name.to_vec());
            }
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            let reader = ExactReader {
                inner: file.take(meta.len()),
                left: meta.len(),
                path,
            };
            self.append(header, name, reader).map_err(add_err)?;
            self.summary.data_bytes += meta.len();
            (self.progress)(self.summary.data_bytes);
        } else if file_type.is_char_device() || file_type.is_block_device() {
            header.set_entry_type(if file_type.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let rdev = meta.rdev();
            header
                .set_device_major(libc::major(rdev))
                .map_err(add_err)?;
            header
                .set_device_minor(libc::minor(rdev))
                .map_err(add_err)?;
            self.append(header, name, io::empty()).map_err(add_err)?;
        } else if file_type.is_fifo() {
            header.set_entry_type(EntryType::Fifo);
            self.append(header, name, io::empty()).map_err(add_err)?;
        }
        self.summary.entries += 1;
        Ok(())
    }

    fn append(&mut self, mut header: Header, name: &[u8], data: impl Read) -> io::Result<()> {
        set_name(&mut self.builder, &mut header, name)?;
        header.set_cksum();
        self.builder.append(&header, data)
    }
}

/// Fails instead of writing a short entry when a file shrinks while it is archived.
struct ExactReader<'p, R> {
    inner: R,
    left: u64,
    path: &'p Path,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if crate::stage::process::interrupted() {
            return Err(io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "{} shrank while it was archived",
                self.path.display()
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Some filesystems (and symlinks on some) simply have none.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("listing xattrs of {}", path.display())),
    };
    let mut names: Vec<OsString> = names.collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name)
            .with_context(|| format!("reading xattr {name:?} of {}", path.display()))?
        {
            out.push((format!("SCHILY.xattr.{}", name.to_string_lossy()), value));
        }
    }
    Ok(out)
}

/// The compressing end of the pipeline.
enum Compressor<W: Write + Send + 'static> {
    Gzip(BlockGzipWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// Taken out of the walker to be finished.
    Closed,
}

impl<W: Write + Send + 'static> Compressor<W> {
    fn new(out: W, options: &PackOptions) -> Result<Self> {
        Ok(match options.compression {
            Compression::Gzip => {
                let store = options.block_store.as_deref().map(BlockStore::new);
                let writer = BlockGzipWriter::new(
                    out,
                    options.gzip_level,
                    options.threads.max(1),
                    store.as_ref(),
                )
                .map_err(|e| gzip_error(e, "starting the gzip stream"))?;
                Compressor::Gzip(writer)
            }
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(out, options.zstd_level)?;
                encoder.multithread(options.threads.max(1) as u32)?;
                Compressor::Zstd(encoder)
            }
        })
    }

    fn finish(self) -> Result<Option<BlockStats>> {
        match self {
            Compressor::Gzip(w) => w
                .finish()
                .map(|(_, stats)| Some(stats))
                .map_err(|e| gzip_error(e, "finishing gzip stream")),
            Compressor::Zstd(w) => w.finish().map(|_| None).context("finishing zstd stream"),
            Compressor::Closed => Ok(None),
        }
    }
}

fn gzip_error(err: io::Error, what: &str) -> anyhow::Error {
    if crate::fsutil::is_disk_full(&err) || err.to_string().contains("No space left on device") {
        anyhow!("no space left on device while {what}: free some space or write elsewhere")
    } else {
        anyhow!("{what}: {err}")
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
            Compressor::Closed => Err(io::Error::other("archive already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
            Compressor::Closed => Ok(()),
        }
    }
}
