//! Writes entry names exactly as given (`./etc/passwd`), with GNU long-name records when a name
//! does not fit the 100-byte field. The tar crate's own path setters strip the leading `./`.

use std::io::{self, Write};

use tar::{Builder, EntryType, Header};

const NAME_FIELD: usize = 100;

/// Puts `name` into `header`, first appending a GNU long-name record when it is too long.
pub fn set_name<W: Write>(
    builder: &mut Builder<W>,
    header: &mut Header,
    name: &[u8],
) -> io::Result<()> {
    if name.len() > NAME_FIELD {
        append_long(builder, EntryType::GNULongName, name)?;
    }
    fill(&mut header.as_old_mut().name, name);
    Ok(())
}

/// Puts a link target into `header`, with a GNU long-link record when it is too long.
pub fn set_link<W: Write>(
    builder: &mut Builder<W>,
    header: &mut Header,
    target: &[u8],
) -> io::Result<()> {
    if target.len() > NAME_FIELD {
        append_long(builder, EntryType::GNULongLink, target)?;
    }
    fill(&mut header.as_old_mut().linkname, target);
    Ok(())
}

/// A pax extended header ('x') carrying `records` for the entry that follows it.
pub fn append_pax<W: Write>(
    builder: &mut Builder<W>,
    name: &[u8],
    records: &[(String, Vec<u8>)],
) -> io::Result<()> {
    let mut data = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::XHeader);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    // GNU tar names these DIR/PaxHeaders/BASE; any name works, a stable one keeps output stable.
    let mut pax_name = b"./PaxHeaders/".to_vec();
    let base = name
        .rsplit(|b| *b == b'/')
        .find(|s| !s.is_empty())
        .unwrap_or(b"root");
    pax_name.extend_from_slice(&base[..base.len().min(NAME_FIELD - pax_name.len())]);
    fill(&mut header.as_old_mut().name, &pax_name);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

fn append_long<W: Write>(
    builder: &mut Builder<W>,
    kind: EntryType,
    value: &[u8],
) -> io::Result<()> {
    let mut header = Header::new_gnu();
    fill(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(kind);
    let mut data = value.to_vec();
    data.push(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

fn fill(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}
