//! The writing side: a `Write` that cuts its input into content-defined blocks, compresses each
//! into a member of ours on a pool of threads (or copies it from the block store when the last
//! pack had the same block) and writes the members in order on a thread of its own (so hashing
//! and writing the output overlap with compression and with whatever produces the input).
//!
//! Cut points: a rolling hash over the bytes past [`MIN_BLOCK`] cuts where its low bits are zero,
//! and a block never exceeds [`MAX_BLOCK`]. A cut depends only on the bytes since the last cut,
//! so an insertion early in the stream moves the cuts around it and none after: a rebuild that
//! changed one stage finds most of its blocks in the store. As members are independent (no
//! dictionary), a member depends only on its block and the level, so the output is the same
//! whatever the thread count and with or without a store.
//!
//! Memory is bounded: a fixed pool of block buffers circulates between the caller, the
//! compressors and the output thread, and a buffer only returns to the caller once its member
//! is written. The caller blocks when all of them are in flight.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor};
use sha2::{Digest, Sha256};

use super::{header, parse_header, HEADER_LEN, MAX_BLOCK, TRAILER_LEN};

/// No cut before this many bytes in a block.
pub const MIN_BLOCK: usize = 256 << 10;
/// A cut where the rolling hash's low bits are zero: about every 256 KiB past the minimum, so
/// blocks average about 512 KiB (large enough that independent members cost little ratio).
const CUT_MASK: u64 = (1 << 18) - 1;

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

type BlockKey = [u8; 32];

/// A block to compress: its place in the stream and its bytes.
type Job = (u64, Vec<u8>);

/// A compressed (or reused) block on its way to the output thread.
struct Done {
    seq: u64,
    member: Vec<u8>,
    block: Vec<u8>,
    /// Set when there is a store: the block's key in it.
    key: Option<BlockKey>,
    reused: bool,
}

/// How many members a stream has, and how many of them came from the block store.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockStats {
    pub blocks: u64,
    pub reused: u64,
}

/// Where the members of the last pack are kept (`blocks` and `index`), to be reused by the next
/// pack of a similar tree. Only a cache: a member is taken from it after its checksum matched,
/// and a missing or damaged store means compressing again, never different output.
#[derive(Debug, Clone)]
pub struct BlockStore {
    dir: PathBuf,
}

/// The store's index: for each block, where its member is and the member's CRC-32.
#[derive(Default)]
struct Index {
    entries: HashMap<BlockKey, (u64, u32, u32)>,
    members: Option<File>,
}

const INDEX_RECORD: usize = 48;

impl BlockStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The last pack's members; empty when there are none or they cannot be read.
    fn load(&self) -> Index {
        let Ok(raw) = std::fs::read(self.dir.join("index")) else {
            return Index::default();
        };
        let Ok(members) = File::open(self.dir.join("blocks")) else {
            return Index::default();
        };
        let mut entries = HashMap::new();
        for record in raw.chunks_exact(INDEX_RECORD) {
            let key: BlockKey = record[..32].try_into().expect("32 bytes");
            let offset = u64::from_le_bytes(record[32..40].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(record[40..44].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(record[44..48].try_into().expect("4 bytes"));
            entries.insert(key, (offset, len, crc));
        }
        Index {
            entries,
            members: Some(members),
        }
    }

    /// A block's member from the store, if it is there, intact and one of ours.
    fn fetch(index: &Index, key: &BlockKey) -> Option<Vec<u8>> {
        let (offset, len, crc) = *index.entries.get(key)?;
        if !(HEADER_LEN + TRAILER_LEN..=super::MAX_MEMBER).contains(&(len as usize)) {
            return None;
        }
        let mut member = vec![0u8; len as usize];
        index
            .members
            .as_ref()?
            .read_exact_at(&mut member, offset)
            .ok()?;
        let intact = crc32fast::hash(&member) == crc && parse_header(&member) == Some(len);
        intact.then_some(member)
    }
}

/// The new store, written beside the old one and renamed over it when the stream is complete.
struct NewStore {
    dir: PathBuf,
    members: io::BufWriter<File>,
    index: Vec<u8>,
    offset: u64,
}

impl NewStore {
    fn create(store: &BlockStore) -> io::Result<Self> {
        crate::fsutil::create_private_dir(&store.dir).map_err(io::Error::other)?;
        let members = File::create(store.dir.join("blocks.partial"))?;
        Ok(Self {
            dir: store.dir.clone(),
            members: io::BufWriter::with_capacity(1 << 20, members),
            index: Vec::new(),
            offset: 0,
        })
    }

    fn add(&mut self, key: &BlockKey, member: &[u8]) -> io::Result<()> {
        self.members.write_all(member)?;
        self.index.extend_from_slice(key);
        self.index.extend_from_slice(&self.offset.to_le_bytes());
        self.index
            .extend_from_slice(&(member.len() as u32).to_le_bytes());
        self.index
            .extend_from_slice(&crc32fast::hash(member).to_le_bytes());
        self.offset += member.len() as u64;
        Ok(())
    }

    fn commit(mut self) -> io::Result<()> {
        self.members.flush()?;
        std::fs::rename(self.dir.join("blocks.partial"), self.dir.join("blocks"))?;
        std::fs::write(self.dir.join("index.partial"), &self.index)?;
        std::fs::rename(self.dir.join("index.partial"), self.dir.join("index"))
    }
}

/// What the output thread hands back at the end.
struct Written<W> {
    out: W,
    stats: BlockStats,
}

pub struct BlockGzipWriter<W: Write + Send + 'static> {
    block: Vec<u8>,
    rolling: u64,
    free: Receiver<Vec<u8>>,
    jobs: Option<SyncSender<Job>>,
    next_seq: u64,
    workers: Vec<JoinHandle<()>>,
    output: Option<JoinHandle<io::Result<Written<W>>>>,
}

impl<W: Write + Send + 'static> BlockGzipWriter<W> {
    /// `level` is libdeflate's (0 to 12; 6 is gzip's default); `threads` compressors; `store`
    /// (optional) the members of the last pack to reuse, replaced by this stream's at `finish`.
    pub fn new(out: W, level: u32, threads: usize, store: Option<&BlockStore>) -> io::Result<Self> {
        let lvl = CompressionLvl::new(level as i32).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {level} is out of range (0 to 12)"),
            )
        })?;
        let index = store.map(|s| Arc::new(s.load()));
        let new_store = store.map(NewStore::create).transpose()?;
        let threads = threads.max(1);
        // Enough blocks for every compressor to have one, one being filled, and the output
        // thread writing one, with one spare so a slow block does not stall the rest.
        let pool = 2 * threads + 2;
        let (free_tx, free) = mpsc::channel::<Vec<u8>>();
        for _ in 0..pool {
            free_tx
                .send(Vec::with_capacity(MAX_BLOCK))
                .expect("receiver alive");
        }
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(pool);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let jobs = Arc::clone(&jobs_rx);
            let done = done_tx.clone();
            let index = index.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || compress_blocks(lvl, level, index.as_deref(), &jobs, &done))?,
            );
        }
        drop(done_tx);
        let output = std::thread::Builder::new()
            .name("gzip-out".into())
            .spawn(move || write_in_order(out, &done_rx, &free_tx, new_store))?;
        let block = free.recv().expect("the pool is full");
        Ok(Self {
            block,
            rolling: 0,
            free,
            jobs: Some(jobs_tx),
            next_seq: 0,
            workers,
            output: Some(output),
        })
    }

    fn submit(&mut self) -> io::Result<()> {
        let block = std::mem::take(&mut self.block);
        self.rolling = 0;
        let sent = self
            .jobs
            .as_ref()
            .map(|jobs| jobs.send((self.next_seq, block)).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(self.failure());
        }
        self.next_seq += 1;
        match self.free.recv() {
            Ok(buffer) => {
                self.block = buffer;
                self.block.clear();
                Ok(())
            }
            Err(_) => Err(self.failure()),
        }
    }

    /// The pipeline stopped early: the output thread's error says why.
    fn failure(&mut self) -> io::Error {
        match self.shut_down() {
            Err(e) => e,
            Ok(_) => io::Error::other("the gzip compressor stopped"),
        }
    }

    fn shut_down(&mut self) -> io::Result<Written<W>> {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        match self.output.take() {
            Some(output) => output
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the gzip output thread panicked"))),
            None => Err(io::Error::other("the gzip stream is already finished")),
        }
    }

    /// Compresses what is left, writes every member (and commits the store) and returns the
    /// output writer, flushed, with the member counts.
    pub fn finish(mut self) -> io::Result<(W, BlockStats)> {
        // An empty input still makes a valid gzip file: one empty member.
        if !self.block.is_empty() || self.next_seq == 0 {
            self.submit()?;
        }
        let Written { mut out, stats } = self.shut_down()?;
        out.flush()?;
        Ok((out, stats))
    }
}

impl<W: Write + Send + 'static> Write for BlockGzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.output.is_none() {
            return Err(io::Error::other("the gzip stream is already finished"));
        }
        // Bytes before the minimum cannot end a block: copied without hashing.
        let room = MIN_BLOCK.saturating_sub(self.block.len());
        if room > 0 {
            let n = room.min(buf.len());
            self.block.extend_from_slice(&buf[..n]);
            return Ok(n);
        }
        let mut rolling = self.rolling;
        let limit = (MAX_BLOCK - self.block.len()).min(buf.len());
        let mut cut = None;
        for (i, byte) in buf[..limit].iter().enumerate() {
            rolling = (rolling << 1).wrapping_add(GEAR[*byte as usize]);
            if rolling & CUT_MASK == 0 {
                cut = Some(i + 1);
                break;
            }
        }
        self.rolling = rolling;
        let n = cut.unwrap_or(limit);
        self.block.extend_from_slice(&buf[..n]);
        if cut.is_some() || self.block.len() == MAX_BLOCK {
            self.submit()?;
        }
        Ok(n)
    }

    /// Blocks end only where the data says, so a flush cannot cut one short (that would make
    /// the bytes depend on when the caller flushed); the data goes out at `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for BlockGzipWriter<W> {
    /// Dropped unfinished (an error upstream): stop the threads, keep nothing running; the
    /// store's partial files are left for the next pack to overwrite.
    fn drop(&mut self) {
        if self.output.is_some() {
            let _ = self.shut_down();
        }
    }
}

/// A block's key in the store: the level, the format and the block's bytes (a member depends
/// on nothing else).
fn block_key(level: u32, block: &[u8]) -> BlockKey {
    let mut hasher = Sha256::new();
    hasher.update(b"stemcell-builder gzip member v1");
    hasher.update(level.to_le_bytes());
    hasher.update(block);
    hasher.finalize().into()
}

fn compress_blocks(
    lvl: CompressionLvl,
    level: u32,
    index: Option<&Index>,
    jobs: &Mutex<Receiver<Job>>,
    done: &Sender<Done>,
) {
    let mut compressor = Compressor::new(lvl);
    loop {
        let job = {
            let Ok(jobs) = jobs.lock() else { return };
            jobs.recv()
        };
        let Ok((seq, block)) = job else { return };
        let key = index.map(|_| block_key(level, &block));
        let stored = index
            .zip(key.as_ref())
            .and_then(|(index, key)| BlockStore::fetch(index, key));
        let reused = stored.is_some();
        let member = stored.unwrap_or_else(|| compress_member(&mut compressor, &block));
        let sent = done.send(Done {
            seq,
            member,
            block,
            key,
            reused,
        });
        if sent.is_err() {
            return;
        }
    }
}

/// One block as a complete gzip member of ours.
pub fn compress_member(compressor: &mut Compressor, block: &[u8]) -> Vec<u8> {
    let bound = compressor.deflate_compress_bound(block.len());
    let mut member = vec![0u8; HEADER_LEN + bound + TRAILER_LEN];
    let deflated = compressor
        .deflate_compress(block, &mut member[HEADER_LEN..HEADER_LEN + bound])
        .expect("libdeflate's bound always fits");
    member.truncate(HEADER_LEN + deflated);
    member.extend_from_slice(&libdeflater::crc32(block).to_le_bytes());
    member.extend_from_slice(&(block.len() as u32).to_le_bytes());
    let total = u32::try_from(member.len()).expect("a block is far below 4 GiB");
    member[..HEADER_LEN].copy_from_slice(&header(total));
    member
}

fn write_in_order<W: Write>(
    mut out: W,
    done: &Receiver<Done>,
    free: &Sender<Vec<u8>>,
    mut store: Option<NewStore>,
) -> io::Result<Written<W>> {
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut stats = BlockStats::default();
    for block in done.iter() {
        waiting.insert(block.seq, block);
        while let Some(block) = waiting.remove(&stats.blocks) {
            out.write_all(&block.member)?;
            if let (Some(store), Some(key)) = (store.as_mut(), block.key.as_ref()) {
                store.add(key, &block.member)?;
            }
            stats.reused += u64::from(block.reused);
            stats.blocks += 1;
            // The caller may be gone (it failed); the buffer is then simply dropped.
            let _ = free.send(block.block);
        }
    }
    if !waiting.is_empty() {
        return Err(io::Error::other("a gzip block went missing"));
    }
    if let Some(store) = store {
        store.commit()?;
    }
    Ok(Written { out, stats })
}
