//! The files services expect besides the pair, each derived from it: `cert` (the leaf
//! alone), `chain` (the intermediates alone, certbot's `chain.pem`) and `combined` (the
//! fullchain then the key, as HAProxy reads it).
//!
//! Every generation holds all three, derived from its pair when it is written (or restored
//! from a snapshot that predates them), so that a swap of `.live` switches them with the
//! pair; a certificate's config only decides which of them get a live path. Derivation is a
//! pure function of the pair's bytes: the same pair always gives the same files.

/// One of the derived files of a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Derived {
    /// The leaf certificate alone.
    Cert,
    /// The certificates after the leaf (empty when the fullchain holds only the leaf).
    Chain,
    /// The fullchain followed by the private key; written with the key's mode and owner.
    Combined,
}

impl Derived {
    /// All of them, in the order they are written and reported.
    pub const ALL: [Derived; 3] = [Derived::Cert, Derived::Chain, Derived::Combined];

    /// The config key naming its live path (`cert`, `chain`, `combined`).
    pub fn key(self) -> &'static str {
        match self {
            Derived::Cert => "cert",
            Derived::Chain => "chain",
            Derived::Combined => "combined",
        }
    }

    /// Its file name inside a generation or snapshot directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Derived::Cert => CERT_FILE,
            Derived::Chain => CHAIN_FILE,
            Derived::Combined => COMBINED_FILE,
        }
    }

    /// Whether it holds the private key (and so gets the key's mode and owner).
    pub fn holds_key(self) -> bool {
        self == Derived::Combined
    }

    /// Its content for the pair `fullchain` + `privkey`. The certificates are written
    /// again from their DER, one PEM block each; `None` when the fullchain holds no
    /// readable certificate (such a pair is never written: its manifest cannot be made).
    pub fn content(self, fullchain: &[u8], privkey: &[u8]) -> Option<Vec<u8>> {
        let certs = certificates(fullchain)?;
        let pem = |ders: &[Vec<u8>]| -> String {
            ders.iter()
                .map(|der| certkeeper_x509::pem::write("CERTIFICATE", der))
                .collect()
        };
        Some(match self {
            Derived::Cert => pem(&certs[..1]).into_bytes(),
            Derived::Chain => pem(&certs[1..]).into_bytes(),
            Derived::Combined => {
                let mut out = fullchain.to_vec();
                if !out.ends_with(b"\n") {
                    out.push(b'\n');
                }
                out.extend_from_slice(privkey);
                out
            }
        })
    }
}

/// The DER of each CERTIFICATE block of a PEM fullchain, in order; `None` when there is none
/// or one does not decode.
fn certificates(fullchain: &[u8]) -> Option<Vec<Vec<u8>>> {
    let blocks = certkeeper_x509::pem::read(fullchain)?;
    let mut out = Vec::new();
    for block in blocks {
        let block = block.ok()?;
        if block.label == "CERTIFICATE" {
            out.push(block.der);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// File names inside a generation directory.
pub(crate) const CERT_FILE: &str = "cert.pem";
pub(crate) const CHAIN_FILE: &str = "chain.pem";
pub(crate) const COMBINED_FILE: &str = "combined.pem";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_splits_the_fullchain() {
        let a = certkeeper_x509::pem::write("CERTIFICATE", b"leaf-der");
        let b = certkeeper_x509::pem::write("CERTIFICATE", b"inter-der");
        let fullchain = format!("{a}{b}");
        let key = b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n";
        let get = |d: Derived| d.content(fullchain.as_bytes(), key).expect("derived");
        assert_eq!(get(Derived::Cert), a.as_bytes());
        assert_eq!(get(Derived::Chain), b.as_bytes());
        assert_eq!(
            get(Derived::Combined),
            [fullchain.as_bytes(), key.as_slice()].concat()
        );
        assert!(
            Derived::Chain
                .content(a.as_bytes(), key)
                .expect("x")
                .is_empty()
        );
        assert!(Derived::Cert.content(b"no pem", key).is_none());
    }
}
