//! Block-parallel gzip: what every `.tgz` this tool writes is made of, and how it reads them back.
//!
//! The stream is cut into content-defined blocks of at most [`MAX_BLOCK`] bytes (see [`encode`]:
//! a rolling hash picks the cut points), each compressed on its own (no dictionary shared across
//! blocks) by libdeflate into a complete gzip member, and the members are concatenated.
//! RFC 1952 allows any number of members in a file, and GNU gzip/tar, Python's `gzip` and
//! `tarfile`, Go's `compress/gzip` (BOSH) and `flate2::MultiGzDecoder` read them as one stream,
//! as they read BGZF files or `cat a.gz b.gz`.
//!
//! Each member's header carries an extra field (FEXTRA, subfield `SB`) holding the member's
//! compressed size, so a reader can find the next member without inflating this one: that is
//! what lets [`decode`] inflate blocks in parallel. Files without that mark (any other gzip)
//! are decoded serially.
//!
//! Output never depends on the machine: cut points depend on the data alone, headers carry no
//! name and no time, and libdeflate is deterministic for a given level. So the same input gives
//! the same bytes on 1 core or 64, and with or without the [`BlockStore`] that lets a rebuild
//! copy the members of unchanged blocks from the last pack instead of compressing them again.

pub mod decode;
pub mod encode;

pub use decode::{decoder, ParallelGzipReader};
pub use encode::{BlockGzipWriter, BlockStats, BlockStore};

/// The most uncompressed bytes a member holds. Blocks average about half of it, which keeps the
/// ratio within a fraction of a percent of one long stream (the window is 32 KiB) and bounds
/// memory per block in flight to about 2 MiB.
pub const MAX_BLOCK: usize = 1 << 20;

/// The header of one of our members: magic, deflate, FEXTRA, no time, no extra flags, Unix,
/// then XLEN = 8 and the subfield `S` `B` with 4 bytes of data: the member's total size.
pub const HEADER_LEN: usize = 20;
/// CRC-32 and ISIZE.
pub const TRAILER_LEN: usize = 8;
const SUBFIELD: [u8; 2] = *b"SB";

/// The largest member a block can become: libdeflate's bound for a block (stored blocks add a
/// few bytes per 64 KiB) plus header and trailer, with room to spare. A reader refuses larger.
pub const MAX_MEMBER: usize = MAX_BLOCK + MAX_BLOCK / 8 + 4096;

/// Our member header for a member of `member_len` bytes in all.
pub fn header(member_len: u32) -> [u8; HEADER_LEN] {
    let len = member_len.to_le_bytes();
    [
        0x1f,
        0x8b,
        8,    // deflate
        0x04, // FEXTRA, and nothing else: no name, no comment, no header CRC
        0,
        0,
        0,
        0, // MTIME: none, so the bytes do not depend on when they were written
        0, // XFL
        3, // OS: Unix
        8,
        0, // XLEN
        SUBFIELD[0],
        SUBFIELD[1],
        4,
        0, // subfield length
        len[0],
        len[1],
        len[2],
        len[3],
    ]
}

/// The member size a header of ours declares; `None` when the header is not ours (another
/// writer's gzip, or our mark absent), which sends the reader to serial decoding.
pub fn parse_header(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let expected = header(0);
    if bytes[..16] != expected[..16] {
        return None;
    }
    Some(u32::from_le_bytes(
        bytes[16..20].try_into().expect("4 bytes"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_only_ours_parse() {
        let h = header(123_456);
        assert_eq!(parse_header(&h), Some(123_456));
        let mut plain = h;
        plain[3] = 0;
        assert_eq!(parse_header(&plain), None, "no FEXTRA: not ours");
        let mut other = h;
        other[12] = b'B';
        other[13] = b'C';
        assert_eq!(parse_header(&other), None, "BGZF's subfield is not ours");
        assert_eq!(parse_header(&h[..19]), None);
    }

    use std::io::{Read, Write};

    /// Compressible but not trivial: text-like lines with a counter.
    fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                format!("line {i} of a root tree {}\n", i * 7919 % 1013).as_bytes(),
            );
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn compress(data: &[u8], threads: usize) -> Vec<u8> {
        compress_with(data, threads, None).0
    }

    fn compress_with(
        data: &[u8],
        threads: usize,
        store: Option<&BlockStore>,
    ) -> (Vec<u8>, BlockStats) {
        let mut w = BlockGzipWriter::new(Vec::new(), 6, threads, store).unwrap();
        // Odd write sizes, so blocks are cut independently of the caller's writes.
        for chunk in data.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    /// Half noise, half text: compressible, and with cut points.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if i % 2 == 0 {
                    state as u8
                } else {
                    b"stemcell"[i % 8]
                }
            })
            .collect()
    }

    #[test]
    fn blocks_are_cut_by_content_within_bounds() {
        let data = noise(6 * MAX_BLOCK, 5);
        let gz = compress(&data, 2);
        let mut at = 0;
        let mut sizes = Vec::new();
        while at < gz.len() {
            let len = parse_header(&gz[at..]).expect("every member is ours") as usize;
            let isize = u32::from_le_bytes(gz[at + len - 4..at + len].try_into().unwrap());
            sizes.push(isize as usize);
            at += len;
        }
        assert_eq!(at, gz.len());
        assert_eq!(sizes.iter().sum::<usize>(), data.len());
        let (last, full) = sizes.split_last().unwrap();
        assert!(*last <= MAX_BLOCK);
        assert!(
            full.iter()
                .all(|&n| (encode::MIN_BLOCK..=MAX_BLOCK).contains(&n)),
            "{sizes:?}"
        );
        assert!(
            full.iter().any(|&n| n < MAX_BLOCK),
            "the rolling hash cuts before the maximum: {sizes:?}"
        );
    }

    #[test]
    fn a_second_pack_reuses_the_unchanged_blocks_and_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::new(dir.path());
        let data = noise(8 << 20, 11);
        let (first, stats) = compress_with(&data, 2, Some(&store));
        assert_eq!(
            first,
            compress(&data, 1),
            "the store never changes the bytes"
        );
        assert!(stats.blocks > 8, "{stats:?}");
        assert_eq!(stats.reused, 0);
        let (again, stats) = compress_with(&data, 2, Some(&store));
        assert_eq!(again, first);
        assert_eq!(stats.reused, stats.blocks);

        // A change in the middle (bytes inserted): only the blocks around it are new.
        let mut changed = data.clone();
        changed.splice(
            4 << 20..4 << 20,
            b"a new file in the middle".iter().copied(),
        );
        let (third, stats) = compress_with(&changed, 3, Some(&store));
        assert_eq!(
            third,
            compress(&changed, 1),
            "reuse never changes the bytes"
        );
        assert_eq!(inflate_ours(third.clone(), 2).unwrap(), changed);
        assert!(
            stats.blocks - stats.reused <= 2,
            "only the blocks around the change are compressed: {stats:?}"
        );

        // A damaged store is not trusted: that block is compressed again.
        let blocks = dir.path().join("blocks");
        let mut bytes = std::fs::read(&blocks).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&blocks, bytes).unwrap();
        let (fourth, stats) = compress_with(&changed, 2, Some(&store));
        assert_eq!(fourth, third);
        assert_eq!(stats.reused, stats.blocks - 1);

        // A truncated index or a missing blocks file: compressed again, same bytes.
        std::fs::remove_file(&blocks).unwrap();
        let (fifth, stats) = compress_with(&changed, 2, Some(&store));
        assert_eq!(fifth, third);
        assert_eq!(stats.reused, 0);
    }

    fn inflate_ours(gz: Vec<u8>, threads: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(std::io::Cursor::new(gz), threads).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn same_bytes_whatever_the_thread_count_and_every_reader_agrees() {
        let data = sample(3 * MAX_BLOCK + 12_345);
        let one = compress(&data, 1);
        assert_eq!(one, compress(&data, 2));
        assert_eq!(one, compress(&data, 7));
        assert!(one.len() < data.len() / 3, "it compresses");
        assert_eq!(
            parse_header(&one),
            Some(u32::from_le_bytes(one[16..20].try_into().unwrap()))
        );
        let mut serial = Vec::new();
        flate2::read::MultiGzDecoder::new(&one[..])
            .read_to_end(&mut serial)
            .unwrap();
        assert_eq!(serial, data, "a standard multi-member gzip");
        assert_eq!(inflate_ours(one.clone(), 3).unwrap(), data);
        assert_eq!(inflate_ours(one, 1).unwrap(), data);
    }

    #[test]
    fn empty_input_is_one_empty_member() {
        let gz = compress(&[], 2);
        assert!(gz.len() <= HEADER_LEN + 8 + TRAILER_LEN, "{}", gz.len());
        assert_eq!(parse_header(&gz), Some(gz.len() as u32), "one member");
        let mut serial = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut serial)
            .unwrap();
        assert!(serial.is_empty());
        assert_eq!(inflate_ours(gz, 2).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn foreign_gzip_and_a_foreign_tail_decode_serially() {
        let data = sample(2 * MAX_BLOCK + 5);
        let mut foreign = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        foreign.write_all(&data).unwrap();
        let foreign = foreign.finish().unwrap();
        assert_eq!(inflate_ours(foreign.clone(), 2).unwrap(), data);
        // Ours, then someone else's member appended (`cat a.gz b.gz`).
        let mut mixed = compress(&data, 2);
        mixed.extend_from_slice(&foreign);
        let mut both = data.clone();
        both.extend_from_slice(&data);
        assert_eq!(inflate_ours(mixed, 2).unwrap(), both);
    }

    #[test]
    fn damage_is_an_error_never_wrong_data() {
        let data = sample(2 * MAX_BLOCK);
        let good = compress(&data, 2);
        let second = parse_header(&good).unwrap() as usize;

        let mut flipped = good.clone();
        flipped[second + 200] ^= 0x55;
        let err = inflate_ours(flipped, 2).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains(&format!("byte {second}")), "{err}");

        let err = inflate_ours(good[..good.len() - 3].to_vec(), 2).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");

        // A member claiming 4 GiB is refused before anything is allocated for it.
        let mut huge = good.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = inflate_ours(huge, 2).unwrap_err();
        assert!(
            err.to_string().contains("declares 4294967295 bytes"),
            "{err}"
        );

        // A trailer claiming more than a block holds.
        let mut big = good.clone();
        big[second - 4..second].copy_from_slice(&(MAX_BLOCK as u32 + 1).to_le_bytes());
        let err = inflate_ours(big, 2).unwrap_err();
        assert!(err.to_string().contains("more than a block"), "{err}");

        let mut wrong_crc = good;
        wrong_crc[second - 8] ^= 1;
        let err = inflate_ours(wrong_crc, 2).unwrap_err();
        assert!(err.to_string().contains("CRC-32"), "{err}");
    }

    #[test]
    fn a_reader_dropped_early_stops_its_threads() {
        let data = sample(8 * MAX_BLOCK);
        let gz = compress(&data, 2);
        let mut reader = decoder(std::io::Cursor::new(gz), 2);
        let mut first = vec![0u8; 1000];
        reader.read_exact(&mut first).unwrap();
        assert_eq!(first, data[..1000]);
        drop(reader); // joins its threads: returning at all is the test
    }

    #[test]
    fn max_member_holds_libdeflates_bound() {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::best());
        assert!(c.deflate_compress_bound(MAX_BLOCK) + HEADER_LEN + TRAILER_LEN <= MAX_MEMBER);
    }
}
