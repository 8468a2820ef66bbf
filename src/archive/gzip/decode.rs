//! The reading side: a `Read` of the decompressed stream of any gzip file.
//!
//! A file of ours (see [`super`]) is inflated in parallel: a reader thread splits it into
//! members by the sizes their headers declare, a pool of threads inflates them with libdeflate
//! (checking each member's CRC-32 and length), and the caller reads the blocks back in order
//! while the next ones are inflated, so the tar extraction on the caller's thread overlaps with
//! decompression. Any other gzip, and whatever follows a member that is not ours, is inflated
//! serially by `flate2::MultiGzDecoder` on the reader thread.
//!
//! Nothing here trusts the file: a declared member size above [`MAX_MEMBER`] or a block above
//! [`MAX_BLOCK`] is refused before anything is allocated for it, and a fixed pool of buffers
//! bounds the blocks in flight, so memory stays at a few MiB per thread whatever the file says.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::Decompressor;

use super::{parse_header, HEADER_LEN, MAX_BLOCK, MAX_MEMBER, TRAILER_LEN};

/// A member to inflate: its place, its bytes (header to trailer), where it starts in the file,
/// and a buffer from the pool to inflate it into.
struct Job {
    seq: u64,
    member: Vec<u8>,
    offset: u64,
    out: Vec<u8>,
}

type Block = (u64, io::Result<Vec<u8>>);

/// The decompressed stream of `input`, a gzip file (the caller checked the magic).
pub fn decoder<R: Read + Send + 'static>(input: R, threads: usize) -> ParallelGzipReader {
    let threads = threads.max(1);
    let pool = 2 * threads + 2;
    let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(pool);
    for _ in 0..pool {
        free_tx.send(Vec::new()).expect("receiver alive");
    }
    let (blocks_tx, blocks_rx) = mpsc::channel::<Block>();
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(pool);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let mut threads_started = Vec::with_capacity(threads + 1);
    for i in 0..threads {
        let jobs = Arc::clone(&jobs_rx);
        let blocks = blocks_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("gunzip-{i}"))
            .spawn(move || inflate_members(&jobs, &blocks));
        match spawned {
            Ok(handle) => threads_started.push(handle),
            // Fewer inflaters is slower, not wrong; with none, the splitter's jobs have no
            // reader and it reports that as an error in order.
            Err(_) => break,
        }
    }
    let splitter = std::thread::Builder::new()
        .name("gunzip-split".into())
        .spawn(move || split_members(input, &free_rx, &jobs_tx, &blocks_tx));
    let mut failed = None;
    match splitter {
        Ok(handle) => threads_started.push(handle),
        Err(e) => {
            failed = Some(io::Error::other(format!(
                "cannot start the gzip reader: {e}"
            )))
        }
    }
    ParallelGzipReader {
        current: Vec::new(),
        pos: 0,
        next: 0,
        waiting: BTreeMap::new(),
        blocks: blocks_rx,
        free: free_tx,
        threads: threads_started,
        failed,
    }
}

pub struct ParallelGzipReader {
    current: Vec<u8>,
    pos: usize,
    next: u64,
    waiting: BTreeMap<u64, io::Result<Vec<u8>>>,
    blocks: Receiver<Block>,
    free: SyncSender<Vec<u8>>,
    threads: Vec<JoinHandle<()>>,
    /// The first error, returned again on every later read.
    failed: Option<io::Error>,
}

impl ParallelGzipReader {
    /// The next block in order; `None` at the end of the stream.
    fn next_block(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(block) = self.waiting.remove(&self.next) {
                self.next += 1;
                return block.map(Some);
            }
            match self.blocks.recv() {
                Ok((seq, block)) => {
                    self.waiting.insert(seq, block);
                }
                // Every thread is done and the next block never came: the end.
                Err(_) => return Ok(None),
            }
        }
    }
}

impl Read for ParallelGzipReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        while self.pos == self.current.len() {
            let used = std::mem::take(&mut self.current);
            self.pos = 0;
            // The splitter may be gone already (end of file); the buffer is then dropped.
            let _ = self.free.try_send(used);
            match self.next_block() {
                Ok(Some(block)) => self.current = block,
                Ok(None) => return Ok(0),
                Err(e) => {
                    let again = io::Error::new(e.kind(), e.to_string());
                    self.failed = Some(again);
                    return Err(e);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ParallelGzipReader {
    /// Stops the threads (a caller that stops early, on an error, leaves none running): with
    /// the blocks' receiver and the pool's sender gone, each of them ends at its next step.
    fn drop(&mut self) {
        let (_, blocks) = mpsc::channel();
        drop(std::mem::replace(&mut self.blocks, blocks));
        let (free, _) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.free, free));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much it read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The reader thread: members of ours go to the inflaters; the first one that is not ours
/// and everything after it is inflated here, serially.
fn split_members<R: Read>(
    mut input: R,
    free: &Receiver<Vec<u8>>,
    jobs: &SyncSender<Job>,
    blocks: &Sender<Block>,
) {
    let mut seq = 0u64;
    let mut offset = 0u64;
    loop {
        let mut head = [0u8; HEADER_LEN];
        let got = match read_full(&mut input, &mut head) {
            Ok(n) => n,
            Err(e) => {
                let _ = blocks.send((seq, Err(e)));
                return;
            }
        };
        if got == 0 {
            return; // the end, between two members
        }
        let Some(member_len) = parse_header(&head[..got]) else {
            serial(
                io::Cursor::new(head[..got].to_vec()).chain(input),
                seq,
                free,
                blocks,
            );
            return;
        };
        let member_len = member_len as usize;
        if !(HEADER_LEN + TRAILER_LEN..=MAX_MEMBER).contains(&member_len) {
            let _ = blocks.send((
                seq,
                Err(corrupt(format!(
                    "the gzip member at byte {offset} declares {member_len} bytes, which no block of ours has"
                ))),
            ));
            return;
        }
        let mut member = vec![0u8; member_len];
        member[..HEADER_LEN].copy_from_slice(&head);
        match read_full(&mut input, &mut member[HEADER_LEN..]) {
            Ok(n) if n == member_len - HEADER_LEN => {}
            Ok(_) => {
                let _ = blocks.send((
                    seq,
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the gzip stream ends inside the member at byte {offset}"),
                    )),
                ));
                return;
            }
            Err(e) => {
                let _ = blocks.send((seq, Err(e)));
                return;
            }
        }
        // A free buffer means a block slot: this is what bounds the blocks in flight.
        let Ok(out) = free.recv() else { return };
        let job = Job {
            seq,
            member,
            offset,
            out,
        };
        if jobs.send(job).is_err() {
            let _ = blocks.send((seq, Err(io::Error::other("the gzip inflaters stopped"))));
            return;
        }
        seq += 1;
        offset += member_len as u64;
    }
}

/// Inflates `input` (any gzip, possibly several members) with flate2, in blocks.
fn serial(input: impl Read, mut seq: u64, free: &Receiver<Vec<u8>>, blocks: &Sender<Block>) {
    let mut decoder =
        flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, input));
    loop {
        let Ok(mut out) = free.recv() else { return };
        out.clear();
        out.resize(MAX_BLOCK, 0);
        match read_full(&mut decoder, &mut out) {
            Ok(0) => return,
            Ok(n) => {
                out.truncate(n);
                if blocks.send((seq, Ok(out))).is_err() {
                    return;
                }
                seq += 1;
            }
            Err(e) => {
                let _ = blocks.send((seq, Err(e)));
                return;
            }
        }
    }
}

fn inflate_members(jobs: &Mutex<Receiver<Job>>, blocks: &Sender<Block>) {
    let mut decompressor = Decompressor::new();
    loop {
        let job = {
            let Ok(jobs) = jobs.lock() else { return };
            jobs.recv()
        };
        let Ok(job) = job else { return };
        let seq = job.seq;
        let block = inflate(&mut decompressor, job);
        if blocks.send((seq, block)).is_err() {
            return;
        }
    }
}

/// One member of ours: the deflate data between header and trailer must inflate to exactly
/// ISIZE bytes whose CRC-32 is the trailer's.
fn inflate(decompressor: &mut Decompressor, job: Job) -> io::Result<Vec<u8>> {
    let Job {
        member,
        offset,
        mut out,
        ..
    } = job;
    let trailer = &member[member.len() - TRAILER_LEN..];
    let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    let size = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes")) as usize;
    if size > MAX_BLOCK {
        return Err(corrupt(format!(
            "the gzip member at byte {offset} declares {size} bytes of data, more than a block of ours holds"
        )));
    }
    // A buffer from the pool is reused as is: inflating overwrites every byte of it (the size
    // is checked below), so zeroing it first was only work.
    if out.len() < size {
        out.resize(size, 0);
    } else {
        out.truncate(size);
    }
    let deflated = &member[HEADER_LEN..member.len() - TRAILER_LEN];
    match decompressor.deflate_decompress(deflated, &mut out) {
        Ok(n) if n == size => {}
        Ok(n) => {
            return Err(corrupt(format!(
                "the gzip member at byte {offset} holds {n} bytes, not the {size} its trailer says"
            )))
        }
        Err(e) => {
            return Err(corrupt(format!(
                "the gzip member at byte {offset} does not inflate: {e}"
            )))
        }
    }
    if libdeflater::crc32(&out) != crc {
        return Err(corrupt(format!(
            "the gzip member at byte {offset} fails its CRC-32 check"
        )));
    }
    Ok(out)
}
