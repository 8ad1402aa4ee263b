//! Certificates and keys as found on disk: reading PEM/DER, chains to a trusted root, names,
//! key/leaf match and validity.
//!
//! Library-like: every function takes its inputs (bytes, a [`TrustStore`], the time) and
//! returns facts; nothing here reads config or prints. It stands on certkeeper-base alone:
//! Cargo keeps it from using the store or anything of the application.

mod chain;
mod key;
mod names;
mod parse;
pub mod pem;

pub use chain::{ChainProblem, TrustStore, examine_chain, links_signed, native_root_store};
pub use key::{KeyError, PrivateKey, key_matches};
pub use names::{covers, uncovered};
pub use parse::{Cert, DerError, Encoding, FileError, ParseError, leaf_of_file, read_certificates};

use std::fmt;

/// Errors of this module that are not findings about a certificate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A trust roots file could not be read or holds no certificate.
    #[error("cannot use trust roots {path}: {reason}")]
    TrustRoots {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// How serious a finding is, in the Nagios sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Due for renewal.
    Warning,
    /// Broken: expired, untrusted, mismatched, missing, corrupt.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}
