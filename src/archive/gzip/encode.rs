//! The writing side: a `Write` that cuts its input into blocks, compresses them on a pool of
//! threads and writes the members in order on a thread of its own (so hashing and writing the
//! output overlap with compression and with whatever produces the input).
//!
//! Memory is bounded: a fixed pool of block buffers circulates between the caller, the
//! compressors and the output thread, and a buffer only returns to the caller once its member
//! is written. The caller blocks when all of them are in flight.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor};

use super::{header, BLOCK_SIZE, HEADER_LEN, TRAILER_LEN};

/// A block to compress: its place in the stream and its bytes.
type Job = (u64, Vec<u8>);
/// A compressed block: its place, its member, and the input buffer to hand back.
type Done = (u64, Vec<u8>, Vec<u8>);

pub struct BlockGzipWriter<W: Write + Send + 'static> {
    block: Vec<u8>,
    free: Receiver<Vec<u8>>,
    jobs: Option<SyncSender<Job>>,
    next_seq: u64,
    workers: Vec<JoinHandle<()>>,
    output: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> BlockGzipWriter<W> {
    /// `level` is libdeflate's (0 to 12; 6 is gzip's default); `threads` compressors.
    pub fn new(out: W, level: u32, threads: usize) -> io::Result<Self> {
        let level = CompressionLvl::new(level as i32).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {level} is out of range (0 to 12)"),
            )
        })?;
        let threads = threads.max(1);
        // Enough blocks for every compressor to have one, one being filled, and the output
        // thread writing one, with one spare so a slow block does not stall the rest.
        let pool = 2 * threads + 2;
        let (free_tx, free) = mpsc::channel::<Vec<u8>>();
        for _ in 0..pool {
            free_tx
                .send(Vec::with_capacity(BLOCK_SIZE))
                .expect("receiver alive");
        }
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(pool);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let jobs = Arc::clone(&jobs_rx);
            let done = done_tx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || compress_blocks(level, &jobs, &done))?,
            );
        }
        drop(done_tx);
        let output = std::thread::Builder::new()
            .name("gzip-out".into())
            .spawn(move || write_in_order(out, &done_rx, &free_tx))?;
        let block = free.recv().expect("the pool is full");
        Ok(Self {
            block,
            free,
            jobs: Some(jobs_tx),
            next_seq: 0,
            workers,
            output: Some(output),
        })
    }

    fn submit(&mut self) -> io::Result<()> {
        let block = std::mem::take(&mut self.block);
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

    fn shut_down(&mut self) -> io::Result<W> {
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

    /// Compresses what is left, writes every member and returns the output writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        // An empty input still makes a valid gzip file: one empty member.
        if !self.block.is_empty() || self.next_seq == 0 {
            self.submit()?;
        }
        let mut out = self.shut_down()?;
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write + Send + 'static> Write for BlockGzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.output.is_none() {
            return Err(io::Error::other("the gzip stream is already finished"));
        }
        let room = BLOCK_SIZE - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            self.submit()?;
        }
        Ok(n)
    }

    /// Blocks are only complete at their fixed size, so a flush cannot cut one short (that
    /// would make the bytes depend on when the caller flushed); the data goes out at `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for BlockGzipWriter<W> {
    /// Dropped unfinished (an error upstream): stop the threads, keep nothing running.
    fn drop(&mut self) {
        if self.output.is_some() {
            let _ = self.shut_down();
        }
    }
}

fn compress_blocks(level: CompressionLvl, jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>) {
    let mut compressor = Compressor::new(level);
    loop {
        let job = {
            let Ok(jobs) = jobs.lock() else { return };
            jobs.recv()
        };
        let Ok((seq, block)) = job else { return };
        let member = compress_member(&mut compressor, &block);
        if done.send((seq, member, block)).is_err() {
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
) -> io::Result<W> {
    let mut waiting: BTreeMap<u64, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    let mut next = 0u64;
    for (seq, member, block) in done.iter() {
        waiting.insert(seq, (member, block));
        while let Some((member, block)) = waiting.remove(&next) {
            out.write_all(&member)?;
            // The caller may be gone (it failed); the buffer is then simply dropped.
            let _ = free.send(block);
            next += 1;
        }
    }
    Ok(out)
}
