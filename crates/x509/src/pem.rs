//! The one PEM reader and the one PEM writer. Every PEM file certkeeper reads (certificates,
//! chains, keys, trust roots, manifests' fullchains, the local CA's files) goes through
//! [`read`], and every PEM text it writes itself through [`write()`]; both use the `pem`
//! crate, the one rcgen writes its certificates and keys with.

/// One PEM block.
pub struct Block {
    /// The label after `BEGIN `.
    pub label: String,
    /// Whether the block has RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, ...).
    pub has_headers: bool,
    /// The decoded content.
    pub der: Vec<u8>,
}

/// Splits PEM text into blocks, in file order, each read or the reason it cannot be; `None`
/// when the bytes hold no `-----BEGIN` at all (or are not text): DER, for a reader that
/// takes it.
///
/// A block starts at a line that reads `-----BEGIN <label>-----` (blanks around it
/// allowed); text before, between and after blocks is ignored. A block without its END line
/// ends the reading: what follows it is part of it.
pub fn read(bytes: &[u8]) -> Option<Vec<Result<Block, String>>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.contains("-----BEGIN ") {
        return None;
    }
    let starts = begin_lines(text);
    let mut blocks = Vec::with_capacity(starts.len());
    for (i, &(at, line, label)) in starts.iter().enumerate() {
        let until = starts.get(i + 1).map_or(text.len(), |next| next.0);
        match ::pem::parse(&text[at..until]) {
            Ok(block) if !block.contents().is_empty() => blocks.push(Ok(Block {
                label: block.tag().to_owned(),
                has_headers: block.headers().iter().next().is_some(),
                der: block.into_contents(),
            })),
            Err(
                ::pem::PemError::MalformedFraming
                | ::pem::PemError::MissingEndTag
                | ::pem::PemError::MismatchedTags(..),
            ) => {
                blocks.push(Err(format!("{label} block at line {line} has no END line")));
                break;
            }
            _ => blocks.push(Err(format!(
                "{label} block at line {line} is not valid base64"
            ))),
        }
    }
    Some(blocks)
}

/// `der` as one PEM block labelled `label`: 64-character lines, each ending in `\n`.
pub fn write(label: &str, der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new(label, der),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

/// The `-----BEGIN <label>-----` lines of `text`: byte offset, line number (from 1), label.
fn begin_lines(text: &str) -> Vec<(usize, usize, &str)> {
    let mut found = Vec::new();
    let mut at = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim();
        if let Some(label) = trimmed
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            // The offset of the dashes, so that the block starts with them.
            let lead = line.len() - line.trim_start().len();
            found.push((at + lead, n + 1, label));
        }
        at += line.len();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnVu\ndXNlZDAeFw0yNjAxMDEwMDAwMDBaFw0yNjAxMDIwMDAwMDBa\n";

    #[test]
    fn text_around_blocks_is_ignored_and_writing_reads_back() {
        let der = b"certificate bytes, any length at all: 0123456789".repeat(3);
        let written = write("CERTIFICATE", &der);
        assert!(written.lines().all(|l| l.len() <= 64));
        assert!(written.ends_with("-----END CERTIFICATE-----\n"));
        let text = format!("subject: x\n  {written}\ncomment\n{written}trailer");
        let blocks = read(text.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        for block in blocks {
            let block = block.unwrap();
            assert_eq!(
                (block.label.as_str(), block.has_headers),
                ("CERTIFICATE", false)
            );
            assert_eq!(block.der, der);
        }
    }

    #[test]
    fn broken_blocks_say_which_and_why() {
        assert!(read(b"\x30\x82\x01").is_none());
        assert!(read(b"no pem here").is_none());
        let truncated = format!("-----BEGIN CERTIFICATE-----\n{BODY}");
        let blocks = read(truncated.as_bytes()).unwrap();
        assert_eq!(
            blocks[0].as_ref().err().map(String::as_str),
            Some("CERTIFICATE block at line 1 has no END line")
        );
        let bad = format!("x\n-----BEGIN KEY-----\nM!I{BODY}-----END KEY-----\n");
        let blocks = read(bad.as_bytes()).unwrap();
        assert_eq!(
            blocks[0].as_ref().err().map(String::as_str),
            Some("KEY block at line 2 is not valid base64")
        );
        let empty = b"-----BEGIN KEY-----\n-----END KEY-----\n";
        assert!(read(empty).unwrap()[0].is_err());
    }

    #[test]
    fn headers_are_noticed() {
        let text = format!(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\n{BODY}-----END RSA PRIVATE KEY-----\n"
        );
        let blocks = read(text.as_bytes()).unwrap();
        assert!(blocks[0].as_ref().is_ok_and(|b| b.has_headers));
    }
}
