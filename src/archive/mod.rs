//! OS image archives: a tar of a root tree (`./` entries) with everything a root filesystem
//! needs preserved, compressed with block-parallel gzip (default, [`gzip`]) or multi-threaded zstd.

pub(crate) mod entry_name;
pub mod gzip;
pub mod members;
pub mod pack;
pub mod quote;
pub mod unpack;

use std::io::{self, Read};

pub use pack::{pack, PackOptions, PackSummary};
pub use unpack::{unpack, unpack_reader, DevicePolicy, UnpackOptions};

/// Ctrl-C or SIGTERM arrived (`crate::stage::process::INTERRUPTED`) while an archive was being
/// read or written: the work stopped, and `what` says what it was and what is left.
#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C or SIGTERM) while {what}")]
pub struct Interrupted {
    pub what: String,
}

/// A reader that fails once Ctrl-C or SIGTERM has arrived, so a long copy stops promptly.
pub struct Interruptible<R>(pub R);

impl<R: Read> Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if crate::stage::process::interrupted() {
            return Err(io::Error::other("interrupted (Ctrl-C or SIGTERM)"));
        }
        self.0.read(buf)
    }
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention for "the time of this build".
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// The build's time: `SOURCE_DATE_EPOCH` when set, else now (seconds since the epoch).
pub fn build_time() -> u64 {
    source_date_epoch().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// `.tgz`, what existing pipelines and BOSH expect.
    Gzip,
    /// Multi-threaded zstd: much faster, for images only our own tools read.
    Zstd,
}

impl Compression {
    /// Detects the compression from a file's first bytes; `None` means a plain tar.
    pub fn sniff(reader: &mut impl Read) -> std::io::Result<(Option<Compression>, Vec<u8>)> {
        let mut magic = vec![0u8; 4];
        let mut filled = 0;
        while filled < magic.len() {
            let n = reader.read(&mut magic[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        magic.truncate(filled);
        let kind = if magic.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        };
        Ok((kind, magic))
    }
}

/// The tar stream inside `input` (gzip, zstd or plain: sniffed from its first bytes). Our own
/// gzip files inflate in parallel; any other gzip serially, on a thread of its own.
pub fn decompressed<R: std::io::Read + Send + 'static>(
    input: R,
) -> std::io::Result<Box<dyn std::io::Read + Send>> {
    use std::io::Read;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, input);
    let (kind, magic) = Compression::sniff(&mut reader)?;
    let stream = std::io::Cursor::new(magic).chain(reader);
    Ok(match kind {
        Some(Compression::Gzip) => Box::new(gzip::decoder(stream, decode_threads())),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::new(stream)?),
        None => Box::new(stream),
    })
}

/// Inflaters for our gzip files: one per core.
pub(crate) fn decode_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
