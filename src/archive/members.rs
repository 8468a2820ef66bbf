//! Reads a tar stream one member at a time, with every size an archive can declare bounded
//! before anything is allocated for it. The tar crate reads GNU long names, long links and pax
//! headers whole into memory, whatever size they declare (a 522 KB archive can make it hold
//! 512 MiB); here it only hands over raw entries and this module assembles them: names and link
//! targets at most [`MAX_NAME`] bytes, a pax header at most [`MAX_PAX`], the decompressed
//! stream at most what the caller allows, and a stream that ends without tar's end-of-archive
//! blocks is called truncated.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use tar::{Archive, EntryType};

use super::quote::{clean, quote};

/// Longest name or link target accepted: Linux's PATH_MAX.
pub const MAX_NAME: u64 = 4096;
/// Largest pax header accepted: xattrs (file capabilities, ACLs, SELinux labels) and a few
/// names fit many times over.
pub const MAX_PAX: u64 = 4 << 20;

/// One entry of the archive, with what its extension headers said about it.
pub struct Member<'a, R: Read> {
    pub entry: tar::Entry<'a, Tracked<R>>,
    pub name: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub kind: EntryType,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// `SCHILY.xattr.NAME` records: (NAME, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where its header starts in the decompressed stream.
    pub offset: u64,
}

/// Why the stream could not be read as an archive.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The very first header is not a tar header: some other kind of file.
    #[error("{0}")]
    NotTar(String),
    #[error("{0}")]
    Truncated(String),
    /// A header past the first one is damaged.
    #[error("{0}")]
    Corrupt(String),
    /// An entry declares something no sane archive needs (a 512 MiB name, a sparse file).
    #[error("{0}")]
    Hostile(String),
    /// The decompressed stream grew past the bound the caller set.
    #[error("it expands to more than {0} bytes")]
    TooLarge(u64),
}

/// What the tracked stream saw, shared with the reader the tar crate owns.
#[derive(Default)]
pub struct StreamState {
    read: Cell<u64>,
    eof: Cell<bool>,
    over: Cell<bool>,
}

/// Counts what passes, notes the end of the stream, and stops at `limit` bytes.
pub struct Tracked<R> {
    inner: R,
    state: Rc<StreamState>,
    limit: u64,
}

impl<R: Read> Tracked<R> {
    pub fn new(inner: R, limit: u64) -> (Self, Rc<StreamState>) {
        let state = Rc::new(StreamState::default());
        (
            Self {
                inner,
                state: state.clone(),
                limit,
            },
            state,
        )
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.state.read.get();
        if read >= self.limit && !buf.is_empty() {
            self.state.over.set(true);
            return Err(io::Error::other("expansion limit reached"));
        }
        let room = (self.limit - read).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        if n == 0 && room > 0 {
            self.state.eof.set(true);
        }
        self.state.read.set(read + n as u64);
        Ok(n)
    }
}

pub struct Members<'a, R: Read> {
    entries: tar::Entries<'a, Tracked<R>>,
    state: Rc<StreamState>,
    limit: u64,
    seen: u64,
    done: bool,
}

impl<'a, R: Read> Members<'a, R> {
    pub fn new(
        archive: &'a mut Archive<Tracked<R>>,
        state: Rc<StreamState>,
        limit: u64,
    ) -> Result<Self, ReadError> {
        let entries = archive
            .entries()
            .map_err(|e| ReadError::NotTar(clean(&e.to_string())))?
            .raw(true);
        Ok(Self {
            entries,
            state,
            limit,
            seen: 0,
            done: false,
        })
    }

    /// Bytes of the decompressed stream read so far.
    pub fn position(&self) -> u64 {
        self.state.read.get()
    }

    /// Classifies an I/O error met while reading the stream (headers or data).
    pub fn stream_error(&self, err: &io::Error) -> ReadError {
        stream_error(&self.state, self.limit, self.seen, err)
    }

    fn next_member(&mut self) -> Result<Option<Member<'a, R>>, ReadError> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Pax> = None;
        loop {
            let mut entry = match self.entries.next() {
                None => {
                    if self.state.eof.get() {
                        return Err(ReadError::Truncated(if self.seen == 0 {
                            "it holds no tar header".into()
                        } else {
                            format!(
                                "it ends at byte {} without tar's end-of-archive marker",
                                self.state.read.get()
                            )
                        }));
                    }
                    if long_name.is_some() || long_link.is_some() || pax.is_some() {
                        return Err(ReadError::Truncated(
                            "it ends after an extension header, before the entry it describes"
                                .into(),
                        ));
                    }
                    return Ok(None);
                }
                Some(Err(e)) => return Err(self.stream_error(&e)),
                Some(Ok(entry)) => entry,
            };
            let offset = entry.raw_header_position();
            let kind = entry.header().entry_type();
            let size = entry.size();
            self.seen += 1;
            let at = || format!("the entry at byte {offset}");
            match kind {
                EntryType::GNULongName | EntryType::GNULongLink => {
                    let what = if kind == EntryType::GNULongName {
                        "GNU long name"
                    } else {
                        "GNU long link target"
                    };
                    let slot = if kind == EntryType::GNULongName {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(ReadError::Hostile(format!(
                            "{} is a second {what} for one entry",
                            at()
                        )));
                    }
                    if size > MAX_NAME + 1 {
                        return Err(ReadError::Hostile(format!(
                            "{} is a {what} of {size} bytes; names over {MAX_NAME} bytes are refused",
                            at()
                        )));
                    }
                    let mut value = self.read_small(&mut entry, size)?;
                    while value.last() == Some(&0) {
                        value.pop();
                    }
                    *slot = Some(value);
                }
                EntryType::XHeader => {
                    if pax.is_some() {
                        return Err(ReadError::Hostile(format!(
                            "{} is a second pax header for one entry",
                            at()
                        )));
                    }
                    if size > MAX_PAX {
                        return Err(ReadError::Hostile(format!(
                            "{} is a pax header of {size} bytes; more than {MAX_PAX} bytes are refused",
                            at()
                        )));
                    }
                    let data = self.read_small(&mut entry, size)?;
                    pax = Some(Pax::parse(&data).map_err(|why| {
                        ReadError::Hostile(format!("{} is a malformed pax header ({why})", at()))
                    })?);
                }
                // Global headers (git archive writes a comment) say nothing an OS image uses;
                // their data is skipped unread.
                EntryType::XGlobalHeader => {
                    if size > MAX_PAX {
                        return Err(ReadError::Hostile(format!(
                            "{} is a global pax header of {size} bytes; more than {MAX_PAX} bytes are refused",
                            at()
                        )));
                    }
                }
                _ => {
                    let header = entry.header();
                    let field = |what: &str, e: io::Error| {
                        ReadError::Corrupt(format!(
                            "{} has an unreadable {what} ({})",
                            at(),
                            clean(&e.to_string())
                        ))
                    };
                    let mode = header.mode().map_err(|e| field("mode", e))?;
                    let mut uid = header.uid().map_err(|e| field("uid", e))?;
                    let mut gid = header.gid().map_err(|e| field("gid", e))?;
                    let mut mtime = header.mtime().map_err(|e| field("mtime", e))? as i64;
                    let mut name = long_name.unwrap_or_else(|| entry.path_bytes().into_owned());
                    let mut link = long_link.or_else(|| {
                        entry
                            .link_name_bytes()
                            .map(|l| l.into_owned())
                            .filter(|l| !l.is_empty())
                    });
                    let mut xattrs = vec![];
                    if let Some(pax) = pax {
                        if let Some(path) = pax.path {
                            name = path;
                        }
                        if let Some(target) = pax.linkpath {
                            link = Some(target);
                        }
                        uid = pax.uid.unwrap_or(uid);
                        gid = pax.gid.unwrap_or(gid);
                        mtime = pax.mtime.unwrap_or(mtime);
                        if pax.size.is_some_and(|s| s != size) {
                            return Err(ReadError::Hostile(format!(
                                "entry '{}' has a pax size that disagrees with its header (files over 8 GiB are not supported)",
                                quote(&name)
                            )));
                        }
                        if pax.sparse {
                            return Err(ReadError::Hostile(format!(
                                "entry '{}' is a sparse file, which an OS image never holds",
                                quote(&name)
                            )));
                        }
                        xattrs = pax.xattrs;
                    }
                    if name.len() as u64 > MAX_NAME
                        || link.as_ref().is_some_and(|l| l.len() as u64 > MAX_NAME)
                    {
                        return Err(ReadError::Hostile(format!(
                            "entry '{}' has a name or link target over {MAX_NAME} bytes",
                            quote(&name)
                        )));
                    }
                    return Ok(Some(Member {
                        entry,
                        name,
                        link,
                        kind,
                        size,
                        mode,
                        uid,
                        gid,
                        mtime,
                        xattrs,
                        offset,
                    }));
                }
            }
        }
    }

    fn read_small(
        &self,
        entry: &mut tar::Entry<'a, Tracked<R>>,
        size: u64,
    ) -> Result<Vec<u8>, ReadError> {
        let mut data = Vec::with_capacity(size as usize);
        entry
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| self.stream_error(&e))?;
        if (data.len() as u64) < size {
            return Err(ReadError::Truncated(format!(
                "it ends inside the entry at byte {}",
                entry.raw_header_position()
            )));
        }
        Ok(data)
    }
}

impl<'a, R: Read> Iterator for Members<'a, R> {
    type Item = Result<Member<'a, R>, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_member().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

fn stream_error(state: &StreamState, limit: u64, seen: u64, err: &io::Error) -> ReadError {
    if state.over.get() {
        return ReadError::TooLarge(limit);
    }
    let text = clean(&err.to_string());
    if err.kind() == io::ErrorKind::UnexpectedEof || state.eof.get() && seen > 0 {
        return ReadError::Truncated(format!("{text} at byte {}", state.read.get()));
    }
    if seen == 0 {
        ReadError::NotTar(text)
    } else {
        ReadError::Corrupt(format!("{text} at byte {}", state.read.get()))
    }
}

/// A pax record: key, value.
type Record<'a> = (&'a [u8], &'a [u8]);

/// `LEN KEY=VALUE\n` records, split by their lengths: values are bytes (file capabilities
/// and other xattrs hold newlines), so splitting on newlines, as the tar crate's
/// `PaxExtensions` does, misreads them.
fn records(data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = vec![];
    let mut rest = data;
    // Some writers pad the header's data with NULs.
    while !rest.is_empty() && rest.iter().any(|b| *b != 0) {
        let space = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or("a record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or("a record with a bad length")?;
        if len <= space + 1 || len > rest.len() {
            return Err(format!("a record of {len} bytes in {} left", rest.len()));
        }
        let record = rest[space + 1..len]
            .strip_suffix(b"\n")
            .ok_or("a record that does not end in a newline")?;
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or("a record without '='")?;
        out.push((&record[..eq], &record[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

/// The pax records an OS image uses.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    size: Option<u64>,
    sparse: bool,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Pax {
    fn parse(data: &[u8]) -> Result<Self, String> {
        let mut out = Pax::default();
        for (key, value) in records(data)? {
            let number = || -> Result<&str, String> {
                std::str::from_utf8(value).map_err(|_| format!("{} is not a number", quote(key)))
            };
            match key {
                b"path" => out.path = Some(value.to_vec()),
                b"linkpath" => out.linkpath = Some(value.to_vec()),
                b"uid" => out.uid = Some(number()?.parse().map_err(|_| "bad uid")?),
                b"gid" => out.gid = Some(number()?.parse().map_err(|_| "bad gid")?),
                b"size" => out.size = Some(number()?.parse().map_err(|_| "bad size")?),
                b"mtime" => {
                    // Seconds with an optional fraction; whole seconds are what we keep.
                    let text = number()?;
                    let whole = text.split('.').next().unwrap_or("");
                    out.mtime = Some(match whole {
                        "" | "-" => 0,
                        w => w.parse().map_err(|_| "bad mtime")?,
                    });
                }
                _ if key.starts_with(b"SCHILY.xattr.") => {
                    let name = &key[b"SCHILY.xattr.".len()..];
                    if name.is_empty() {
                        return Err("an xattr record without a name".into());
                    }
                    out.xattrs.push((name.to_vec(), value.to_vec()));
                }
                _ if key.starts_with(b"GNU.sparse.") => out.sparse = true,
                // atime, ctime, uname, gname, comment, charset, LIBARCHIVE.*: nothing to keep.
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_values_may_hold_newlines() {
        let value = b"\x01\x00\x00\x02\n\x00\n";
        let mut data = b"33 SCHILY.xattr.security.capability=".to_vec();
        data.extend_from_slice(value);
        data.push(b'\n');
        let len = data.len();
        let data = [format!("{len}").into_bytes(), data[2..].to_vec()].concat();
        let pax = Pax::parse(&data).unwrap();
        assert_eq!(
            pax.xattrs,
            vec![(b"security.capability".to_vec(), value.to_vec())]
        );
        assert!(Pax::parse(b"99 path=x\n").is_err());
        assert!(Pax::parse(b"12 pathx\n").is_err());
        assert_eq!(
            Pax::parse(b"11 path=ab\n\0\0").unwrap().path,
            Some(b"ab".to_vec())
        );
    }
}
