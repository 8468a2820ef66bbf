//! The writing end of an export: a compressor (parallel gzip, zstd or none) and a writer that
//! hashes and counts what passes through it, both of which give their writer back when done.

use std::io::{self, Write};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutCompression {
    Gzip,
    Zstd,
    None,
}

/// Compresses into `W`. gzip goes through content-defined blocks, so the bytes do not depend on
/// the number of threads; its header carries no name and no time.
pub enum Compressor<W: Write + Send + 'static> {
    Gzip(crate::archive::gzip::BlockGzipWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write + Send + 'static> Compressor<W> {
    pub fn new(out: W, kind: OutCompression) -> Result<Self> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(match kind {
            OutCompression::Gzip => Compressor::Gzip(
                crate::archive::gzip::BlockGzipWriter::new(
                    out,
                    crate::archive::pack::DEFAULT_GZIP_LEVEL,
                    threads,
                    None,
                )
                .context("starting the gzip compressor")?,
            ),
            OutCompression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(out, 3)?;
                encoder.multithread(threads as u32)?;
                Compressor::Zstd(encoder)
            }
            OutCompression::None => Compressor::None(out),
        })
    }

    pub fn finish(self) -> Result<W> {
        match self {
            Compressor::Gzip(w) => w
                .finish()
                .map(|(out, _)| out)
                .context("finishing the gzip stream"),
            Compressor::Zstd(w) => w.finish().context("finishing the zstd stream"),
            Compressor::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

/// Hashes (sha256) and counts the bytes written through it.
pub struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Digesting<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The writer, the hex digest and the byte count.
    pub fn into_parts(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_is_the_same_bytes_whatever_the_data_chunking_and_reads_back() {
        let data = b"stemcell ".repeat(100_000);
        let mut outputs = vec![];
        for chunk in [7usize, 4096, 1 << 20] {
            let mut c = Compressor::new(Vec::new(), OutCompression::Gzip).unwrap();
            for part in data.chunks(chunk) {
                c.write_all(part).unwrap();
            }
            outputs.push(c.finish().unwrap());
        }
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
        let gz = &outputs[0];
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "no mtime in the gzip header");
        assert_eq!(gz[3] & 0x08, 0, "no file name in the gzip header");
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(gz.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn digesting_counts_and_hashes() {
        let mut d = Digesting::new(Vec::new());
        d.write_all(b"abc").unwrap();
        let (inner, digest, bytes) = d.into_parts();
        assert_eq!(inner, b"abc");
        assert_eq!(bytes, 3);
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
