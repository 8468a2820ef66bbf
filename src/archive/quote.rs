//! Untrusted bytes (entry names, link targets, error text that quotes them) made fit for a
//! one-line message: control characters and invalid UTF-8 escaped, long values cut short. An
//! archive names its entries, so an error must never print 512 MiB or a terminal escape.

/// Characters of a quoted value shown before it is cut.
const SHOWN: usize = 160;

/// `bytes` as printable text: `\xNN` for control bytes and invalid UTF-8, cut after a few
/// hundred bytes with the full length said.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown == SHOWN {
                return cut(out, bytes.len());
            }
            if c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
            shown += 1;
        }
        for b in chunk.invalid() {
            if shown == SHOWN {
                return cut(out, bytes.len());
            }
            out.push_str(&format!("\\x{b:02x}"));
            shown += 1;
        }
    }
    out
}

/// Error text from a library that may quote archive bytes, made one short clean line.
pub fn clean(text: &str) -> String {
    quote(text.replace('\n', " ").as_bytes())
}

fn cut(mut out: String, len: usize) -> String {
    out.push_str(&format!("…({len} bytes)"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_invalid_bytes() {
        assert_eq!(quote(b"./etc/passwd"), "./etc/passwd");
        assert_eq!(quote(b"a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(quote(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(quote("grüße".as_bytes()), "grüße");
        assert_eq!(clean("two\nlines"), "two lines");
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let q = quote(&vec![b'a'; 1 << 20]);
        assert!(q.len() < 200, "{}", q.len());
        assert!(q.ends_with("…(1048576 bytes)"), "{q}");
    }
}
