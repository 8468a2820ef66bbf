//! Writes tar entries under names we choose (`rootfs/etc/passwd`, `./etc/passwd`), with GNU
//! long-name records for names over 100 bytes and pax records for xattrs, through the same
//! raw-name helpers `pack` uses (the tar crate's path setters strip a leading `./`).

use std::io::{self, Read, Write};

use tar::{Builder, EntryType, Header};

use super::source::Item;
use crate::archive::entry_name::{append_pax, set_link, set_name};

pub struct TarOut<W: Write> {
    builder: Builder<W>,
}

impl<W: Write> TarOut<W> {
    pub fn new(out: W) -> Self {
        Self {
            builder: Builder::new(out),
        }
    }

    /// Appends `entry` under its `rel` name, which the caller has already put in the output's
    /// naming (`rootfs/...` for garden).
    pub fn append(&mut self, entry: &Item, data: impl Read) -> io::Result<()> {
        if !entry.pax.is_empty() {
            append_pax(&mut self.builder, &entry.rel, &entry.pax)?;
        }
        let mut header = Header::new_gnu();
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode & 0o7777);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(entry.mtime);
        header.set_size(entry.size);
        if let Some((major, minor)) = entry.device {
            header.set_device_major(major)?;
            header.set_device_minor(minor)?;
        }
        if let Some(link) = &entry.link {
            set_link(&mut self.builder, &mut header, link)?;
        }
        set_name(&mut self.builder, &mut header, &entry.rel)?;
        header.set_cksum();
        self.builder.append(&header, data)
    }

    /// A regular file with the given contents, owned by root, mode 0644 (`metadata.json`).
    pub fn append_file(&mut self, name: &[u8], mtime: u64, data: &[u8]) -> io::Result<()> {
        let entry = Item {
            rel: name.to_vec(),
            kind: EntryType::Regular,
            link: None,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
            size: data.len() as u64,
            device: None,
            pax: vec![],
        };
        self.append(&entry, data)
    }

    /// Writes the end-of-archive blocks and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_links_and_xattrs_read_back() {
        let long = format!("rootfs/{}/file", "d".repeat(120));
        let target = format!("./{}", "t".repeat(150));
        let mut out = TarOut::new(Vec::new());
        out.append(
            &Item {
                rel: long.clone().into_bytes(),
                kind: EntryType::Symlink,
                link: Some(target.clone().into_bytes()),
                mode: 0o777,
                uid: 1000,
                gid: 1000,
                mtime: 7,
                size: 0,
                device: None,
                pax: vec![("SCHILY.xattr.user.k".into(), b"v".to_vec())],
            },
            io::empty(),
        )
        .unwrap();
        out.append_file(b"metadata.json", 0, b"{}").unwrap();
        let bytes = out.finish().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut first = entries.next().unwrap().unwrap();
        assert_eq!(first.path_bytes().as_ref(), long.as_bytes());
        assert_eq!(first.link_name_bytes().unwrap().as_ref(), target.as_bytes());
        assert_eq!(first.header().uid().unwrap(), 1000);
        let pax: Vec<_> = first
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|e| e.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(pax, vec!["SCHILY.xattr.user.k"]);
        let second = entries.next().unwrap().unwrap();
        assert_eq!(second.path_bytes().as_ref(), b"metadata.json");
        assert!(entries.next().is_none());
    }
}
