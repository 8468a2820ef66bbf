//! Parallel gzip that can reuse its earlier work. The stream is cut into content-defined blocks
//! (a rolling hash picks the cut points, so an insertion early in the stream moves no later
//! cut), and each block is compressed on its own, with the 32 KiB before it as its dictionary
//! and a sync flush at its end, as pigz does. So a block's compressed bytes depend only on its
//! bytes and the 32 KiB before it: the output is the same whatever the thread count, and a
//! block store (the blocks of the previous pack, keyed by a hash of dictionary and block) lets
//! an unchanged block be copied instead of compressed again. A rebuild that changed one stage
//! recompresses a few blocks around each change, not the whole tree.
//!
//! The output is one standard gzip member: header, the blocks, an empty final block, CRC-32
//! and size. The store is only a cache: a block is taken from it after its checksum matched,
//! and a missing or damaged store just means compressing again.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};
use sha2::{Digest, Sha256};

/// No cut before this many bytes in a block, and always one at `MAX_BLOCK`.
const MIN_BLOCK: usize = 128 << 10;
const MAX_BLOCK: usize = 1 << 20;
/// A cut where the rolling hash's low bits are zero: about every 128 KiB past the minimum.
const CUT_MASK: u64 = (1 << 17) - 1;
/// deflate's window: a block's dictionary is this much of what precedes it.
const DICTIONARY: usize = 32 << 10;
/// An empty final deflate block (fixed Huffman codes, end-of-block): closes the stream.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];
/// No name, no time (so the same tree gives the same bytes), Unix.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

type BlockKey = [u8; 32];

/// The rolling hash's byte table: fixed pseudo-random values (splitmix64), so cut points are
/// the same on every build of this tool.
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x5354_454d_4345_4c4c;
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// Where the compressed blocks of the last pack are kept (`blocks` and `index`).
#[derive(Debug, Clone)]
pub struct BlockStore {
    dir: PathBuf,
}

/// The store's index: for each block, where its compressed bytes are and their CRC-32.
#[derive(Default)]
struct Index {
    entries: HashMap<BlockKey, (u64, u32, u32)>,
    blocks: Option<File>,
}

impl BlockStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The last pack's blocks; empty when there are none or they cannot be read.
    fn load(&self) -> Index {
        let Ok(raw) = std::fs::read(self.dir.join("index")) else {
            return Index::default();
        };
        let Ok(blocks) = File::open(self.dir.join("blocks")) else {
            return Index::default();
        };
        let mut entries = HashMap::new();
        for record in raw.chunks_exact(48) {
            let key: BlockKey = record[..32].try_into().expect("32 bytes");
            let offset = u64::from_le_bytes(record[32..40].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(record[40..44].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(record[44..48].try_into().expect("4 bytes"));
            entries.insert(key, (offset, len, crc));
        }
        Index {
            entries,
            blocks: Some(blocks),
        }
    }

    /// A block's compressed bytes from the store, if it is there and intact.
    fn fetch(index: &Index, key: &BlockKey) -> Option<Vec<u8>> {
        let (offset, len, crc) = *index.entries.get(key)?;
        let mut bytes = vec![0u8; len as usize];
        index
            .blocks
            .as_ref()?
            .read_exact_at(&mut bytes, offset)
            .ok()?;
        (crc32fast::hash(&bytes) == crc).then_some(bytes)
    }
}

/// The new store, written beside the old one and renamed over it when the pack is complete.
struct NewStore {
    dir: PathBuf,
    blocks: io::BufWriter<File>,
    index: Vec<u8>,
    offset: u64,
}

impl NewStore {
    fn create(store: &BlockStore) -> io::Result<Self> {
        crate::fsutil::create_private_dir(&store.dir).map_err(io::Error::other)?;
        let blocks = File::create(store.dir.join("blocks.partial"))?;
        Ok(Self {
            dir: store.dir.clone(),
            blocks: io::BufWriter::with_capacity(1 << 20, blocks),
            index: Vec::new(),
            offset: 0,
        })
    }

    fn add(&mut self, key: &BlockKey, bytes: &[u8]) -> io::Result<()> {
        self.blocks.write_all(bytes)?;
        self.index.extend_from_slice(key);
        self.index.extend_from_slice(&self.offset.to_le_bytes());
        self.index
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.index
            .extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn commit(mut self) -> io::Result<()> {
        self.blocks.flush()?;
        std::fs::rename(self.dir.join("blocks.partial"), self.dir.join("blocks"))?;
        std::fs::write(self.dir.join("index.partial"), &self.index)?;
        std::fs::rename(self.dir.join("index.partial"), self.dir.join("index"))
    }
}

/// A block on its way to a worker.
struct Job {
    seq: u64,
    dictionary: Vec<u8>,
    data: Vec<u8>,
}

/// A compressed (or reused) block on its way to the writer.
struct Done {
    seq: u64,
    key: BlockKey,
    bytes: io::Result<Vec<u8>>,
    reused: bool,
}

/// What the writer thread reports at the end.
struct Written<W> {
    out: W,
    reused: u64,
    blocks: u64,
}

/// A gzip writer over `W`; call `finish` to complete the stream.
pub struct BlockGzip<W: Write + Send + 'static> {
    block: Vec<u8>,
    rolling: u64,
    /// The last `DICTIONARY` bytes before `block`.
    tail: Vec<u8>,
    seq: u64,
    crc: crc32fast::Hasher,
    size: u64,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<Written<W>>>>,
    /// The first error a worker or the writer met, reported on the next write.
    failed: Arc<Mutex<Option<String>>>,
}

/// What `finish` returns besides the writer: how many blocks came from the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockStats {
    pub blocks: u64,
    pub reused: u64,
}

impl<W: Write + Send + 'static> BlockGzip<W> {
    pub fn new(
        mut out: W,
        level: u32,
        threads: usize,
        store: Option<&BlockStore>,
    ) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        let index = Arc::new(store.map(BlockStore::load).unwrap_or_default());
        let new_store = store.map(NewStore::create).transpose()?;
        let threads = threads.max(1);
        let (jobs, job_rx) = sync_channel::<Job>(threads * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = sync_channel::<Done>(threads * 2);
        let failed = Arc::new(Mutex::new(None));
        let workers = (0..threads)
            .map(|_| {
                let job_rx = job_rx.clone();
                let done_tx = done_tx.clone();
                let index = index.clone();
                std::thread::spawn(move || work(&job_rx, &done_tx, &index, level))
            })
            .collect();
        drop(done_tx);
        let failed_writer = failed.clone();
        let writer = std::thread::spawn(move || {
            let result = write_in_order(out, done_rx, new_store);
            if let Err(e) = &result {
                failed_writer
                    .lock()
                    .expect("error slot")
                    .get_or_insert(e.to_string());
            }
            result
        });
        Ok(Self {
            block: Vec::with_capacity(MAX_BLOCK),
            rolling: 0,
            tail: Vec::new(),
            seq: 0,
            crc: crc32fast::Hasher::new(),
            size: 0,
            jobs: Some(jobs),
            workers,
            writer: Some(writer),
            failed,
        })
    }

    fn check(&self) -> io::Result<()> {
        match self.failed.lock().expect("error slot").as_ref() {
            Some(why) => Err(io::Error::other(why.clone())),
            None => Ok(()),
        }
    }

    /// Hands the current block to the workers.
    fn cut(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(MAX_BLOCK));
        let dictionary = std::mem::take(&mut self.tail);
        let keep = data.len().min(DICTIONARY);
        self.tail = if keep == DICTIONARY {
            data[data.len() - keep..].to_vec()
        } else {
            let mut tail = dictionary.clone();
            tail.extend_from_slice(&data);
            tail[tail.len().saturating_sub(DICTIONARY)..].to_vec()
        };
        self.rolling = 0;
        let job = Job {
            seq: self.seq,
            dictionary,
            data,
        };
        self.seq += 1;
        let sent = self.jobs.as_ref().expect("open until finish").send(job);
        if sent.is_err() {
            self.check()?;
            return Err(io::Error::other("the gzip workers stopped"));
        }
        Ok(())
    }

    /// Completes the stream: the last block, the final block, CRC-32 and size.
    pub fn finish(mut self) -> io::Result<(W, BlockStats)> {
        if !self.block.is_empty() {
            self.cut()?;
        }
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let written = self
            .writer
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| io::Error::other("the gzip writer panicked"))??;
        let mut out = written.out;
        out.write_all(&FINAL_BLOCK)?;
        out.write_all(&self.crc.clone().finalize().to_le_bytes())?;
        out.write_all(&(self.size as u32).to_le_bytes())?;
        out.flush()?;
        Ok((
            out,
            BlockStats {
                blocks: written.blocks,
                reused: written.reused,
            },
        ))
    }
}

impl<W: Write + Send + 'static> Write for BlockGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.crc.update(buf);
        self.size += buf.len() as u64;
        let mut rest = buf;
        while !rest.is_empty() {
            // Bytes before the minimum cannot end a block: copied without hashing.
            let room = MIN_BLOCK.saturating_sub(self.block.len());
            if room > 0 {
                let n = room.min(rest.len());
                self.block.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                continue;
            }
            let mut cut_at = None;
            for (i, byte) in rest.iter().enumerate() {
                self.rolling = (self.rolling << 1).wrapping_add(GEAR[*byte as usize]);
                if self.rolling & CUT_MASK == 0 || self.block.len() + i + 1 >= MAX_BLOCK {
                    cut_at = Some(i + 1);
                    break;
                }
            }
            match cut_at {
                Some(n) => {
                    self.block.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    self.cut()?;
                }
                None => {
                    self.block.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check()
    }
}

impl<W: Write + Send + 'static> Drop for BlockGzip<W> {
    fn drop(&mut self) {
        // Unfinished (an error elsewhere): stop the threads without writing a stream end.
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn block_key(dictionary: &[u8], data: &[u8], level: u32) -> BlockKey {
    let mut hasher = Sha256::new();
    hasher.update([level as u8]);
    hasher.update((dictionary.len() as u64).to_le_bytes());
    hasher.update(dictionary);
    hasher.update(data);
    hasher.finalize().into()
}

fn work(jobs: &Mutex<Receiver<Job>>, done: &SyncSender<Done>, index: &Index, level: u32) {
    loop {
        let job = match jobs.lock().expect("job queue").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let key = block_key(&job.dictionary, &job.data, level);
        let (bytes, reused) = match BlockStore::fetch(index, &key) {
            Some(bytes) => (Ok(bytes), true),
            None => (compress(&job.dictionary, &job.data, level), false),
        };
        let sent = done.send(Done {
            seq: job.seq,
            key,
            bytes,
            reused,
        });
        if sent.is_err() {
            return;
        }
    }
}

/// One block as raw deflate, primed with `dictionary`, ending in a sync flush (byte-aligned,
/// not final), so blocks can be concatenated.
pub(crate) fn compress(dictionary: &[u8], data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
        compress
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // Done when all input is in and zlib left output space, or had nothing left to flush
        // (BufError with space available means no progress was possible).
        if compress.total_in() as usize == data.len()
            && (out.len() < out.capacity() || status == Status::BufError)
        {
            return Ok(out);
        }
    }
}

fn write_in_order<W: Write>(
    mut out: W,
    done: Receiver<Done>,
    mut store: Option<NewStore>,
) -> io::Result<Written<W>> {
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0;
    let mut reused = 0;
    for block in done {
        waiting.insert(block.seq, block);
        while let Some(block) = waiting.remove(&next) {
            let bytes = block.bytes?;
            out.write_all(&bytes)?;
            if let Some(store) = store.as_mut() {
                store.add(&block.key, &bytes)?;
            }
            reused += u64::from(block.reused);
            next += 1;
        }
    }
    if !waiting.is_empty() {
        return Err(io::Error::other("a gzip block went missing"));
    }
    if let Some(store) = store {
        store.commit()?;
    }
    Ok(Written {
        out,
        reused,
        blocks: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Half noise, half text: compressible, and with cut points.
                if i % 2 == 0 {
                    state as u8
                } else {
                    b"stemcell"[i % 8]
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], threads: usize, store: Option<&BlockStore>) -> (Vec<u8>, BlockStats) {
        let mut writer = BlockGzip::new(Vec::new(), 6, threads, store).unwrap();
        for chunk in data.chunks(7777) {
            writer.write_all(chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn the_output_is_standard_gzip_and_the_same_for_any_thread_count() {
        for data in [Vec::new(), b"tiny".to_vec(), noise(3 << 20, 7)] {
            let (one, stats) = gzip(&data, 1, None);
            assert_eq!(gunzip(&one), data);
            assert_eq!(stats.reused, 0);
            let (four, _) = gzip(&data, 4, None);
            assert_eq!(one, four, "thread count changed the bytes");
        }
        let status = std::process::Command::new("gzip")
            .arg("-t")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(&gzip(&noise(2 << 20, 3), 2, None).0)?;
                child.wait()
            })
            .unwrap();
        assert!(status.success(), "gzip -t accepts it");
    }

    #[test]
    fn a_second_pack_reuses_the_unchanged_blocks_and_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::new(dir.path());
        let data = noise(8 << 20, 11);
        let (first, stats) = gzip(&data, 2, Some(&store));
        assert!(stats.blocks > 8, "{stats:?}");
        assert_eq!(stats.reused, 0);
        let (again, stats) = gzip(&data, 2, Some(&store));
        assert_eq!(again, first);
        assert_eq!(stats.reused, stats.blocks);

        // A change in the middle (bytes inserted): only the blocks around it are new.
        let mut changed = data.clone();
        changed.splice(
            4 << 20..4 << 20,
            b"a new file in the middle".iter().copied(),
        );
        let (third, stats) = gzip(&changed, 2, Some(&store));
        assert_eq!(gunzip(&third), changed);
        assert_eq!(
            third,
            gzip(&changed, 1, None).0,
            "reuse never changes the bytes"
        );
        assert!(
            stats.blocks - stats.reused <= 3,
            "only the blocks around the change are compressed: {stats:?}"
        );

        // A damaged store is not trusted: the block is compressed again.
        let blocks = dir.path().join("blocks");
        let mut bytes = std::fs::read(&blocks).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&blocks, bytes).unwrap();
        let (fourth, stats) = gzip(&changed, 2, Some(&store));
        assert_eq!(fourth, third);
        assert_eq!(stats.reused, stats.blocks - 1);
    }
}
