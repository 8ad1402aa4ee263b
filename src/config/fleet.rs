//! The `fleet:` section as validated (one issuance shared by many hosts through etcd), and
//! the one reader of the fleet's seal key file, which `config check` and the fleet module
//! both use.
//!
//! The seal key is a credential: 32 random bytes, the same on every host of the fleet, in a
//! regular file only its owner may access. It is read from an opened descriptor (what is
//! checked is what is read), never shown, and wiped from memory when dropped.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::secret::SecretSource;

/// Default `fleet.lease_ttl`: how long a dead issuer holds its election.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// Shortest `fleet.lease_ttl`: below it a busy host loses its lease between keep-alives.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(5);
/// Longest `fleet.lease_ttl`: beyond it a dead issuer stalls the fleet too long.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(5 * 60);
/// Default `fleet.canary`: hosts that must serve a new generation before the rest take it.
pub const DEFAULT_CANARY: usize = 1;
/// Default `fleet.max_failures`: hosts that may fail a generation before it is declared bad.
pub const DEFAULT_MAX_FAILURES: usize = 1;
/// Upper bound of `fleet.canary` and `fleet.max_failures`.
pub const MAX_FLEET_HOSTS: usize = 10_000;
/// The longest fleet name or host id (each becomes one etcd key segment).
pub const MAX_FLEET_ID: usize = 64;
/// The size of a seal key (AES-256).
pub const SEAL_KEY_LEN: usize = 32;

/// The `fleet` section: where the fleet's shared state lives and how it deploys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// The fleet's name; its keys live under `/certkeeper/<name>/`.
    pub name: String,
    /// This host's id in the fleet (default: the hostname).
    pub host: String,
    /// How to reach etcd.
    pub etcd: Etcd,
    /// The seal key's file (32 bytes, mode 0600 or stricter).
    pub seal_key_file: PathBuf,
    /// The lease of an issuer's election: how fast a dead issuer is replaced.
    pub lease_ttl: Duration,
    /// Hosts that must serve a new generation before the others deploy it (at least 1).
    pub canary: usize,
    /// Hosts that may fail to deploy a generation before it is declared bad.
    pub max_failures: usize,
}

/// How to reach the etcd cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Etcd {
    /// `http(s)://host:port` of each member.
    pub endpoints: Vec<String>,
    /// CA bundle to verify the members' TLS certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (both or neither).
    pub client_identity: Option<ClientIdentity>,
    /// etcd user and where its password comes from.
    pub auth: Option<EtcdAuth>,
}

/// A client certificate for mutual TLS to etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// `cert_file`: the client certificate (PEM).
    pub cert_file: PathBuf,
    /// `key_file`: its private key (PEM).
    pub key_file: PathBuf,
}

/// etcd's user/password authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdAuth {
    /// The user name.
    pub username: String,
    /// `password_env` or `password_file`.
    pub password: SecretSource,
}

/// Why a seal key file cannot be used. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealKeyFileError {
    /// The file could not be opened or read.
    #[error("cannot read seal key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Something other than a regular file is at the path.
    #[error("seal key file {} is {what}, not a regular file; write the key with `certkeeper fleet keygen`", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What is there ("a directory", "a FIFO").
        what: &'static str,
    },
    /// Group or others may access the file.
    #[error("seal key file {} is accessible by group or others (mode {mode:04o}); it must be 0600 or stricter: chmod 600 {}", path.display(), path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold exactly [`SEAL_KEY_LEN`] bytes.
    #[error("seal key file {} holds {len} bytes; a seal key is exactly 32 bytes (raw, no newline): write one with `certkeeper fleet keygen` and copy it to every host", path.display())]
    Size {
        /// The file.
        path: PathBuf,
        /// How many bytes it holds (at most 33 are read).
        len: usize,
    },
}

/// Reads the seal key at `path`: a regular file (a link to one is followed), of exactly
/// [`SEAL_KEY_LEN`] bytes, that neither group nor others may access. The bytes are wiped
/// from memory when the result is dropped.
pub fn read_seal_key_file(path: &Path) -> Result<Zeroizing<[u8; SEAL_KEY_LEN]>, SealKeyFileError> {
    use rustix::fs::OFlags;
    let read = |source| SealKeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    // Opened without blocking (a FIFO at the path must not hang), then checked through the
    // descriptor, so that what is checked is what is read.
    let flags = OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if !meta.file_type().is_file() {
        return Err(SealKeyFileError::NotRegular {
            path: path.to_owned(),
            what: crate::fsutil::kind_name(meta.file_type()),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(SealKeyFileError::Exposed {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    let limit = SEAL_KEY_LEN as u64 + 1;
    let bytes = Zeroizing::new(match crate::fsutil::read_open(file, limit) {
        Ok(b) => b,
        // Larger than the limit: the size is all that is reported.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(SealKeyFileError::Size {
                path: path.to_owned(),
                len: meta.len().max(limit) as usize,
            });
        }
        Err(e) => return Err(read(e)),
    });
    let mut key = Zeroizing::new([0u8; SEAL_KEY_LEN]);
    if bytes.len() != SEAL_KEY_LEN {
        return Err(SealKeyFileError::Size {
            path: path.to_owned(),
            len: bytes.len(),
        });
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Whether `id` can be a fleet name or host id: 1 to [`MAX_FLEET_ID`] characters of
/// `[A-Za-z0-9._-]`, and neither `.` nor `..` (each becomes one segment of an etcd key).
pub fn valid_fleet_id(id: &str) -> bool {
    (1..=MAX_FLEET_ID).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// This host's name as the kernel has it (`uname -n`).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn fleet_ids_are_one_safe_key_segment() {
        for ok in ["web-pool", "web1.example.com", "A_b-9", &"x".repeat(64)] {
            assert!(valid_fleet_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65), "a\nb"] {
            assert!(!valid_fleet_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn seal_key_files_are_refused_one_reason_each() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let good = write("good", &[7u8; 32], 0o600);
        assert_eq!(*read_seal_key_file(&good).unwrap(), [7u8; 32]);
        let ro = write("ro", &[7u8; 32], 0o400);
        assert!(read_seal_key_file(&ro).is_ok());
        let open = write("open", &[7u8; 32], 0o644);
        let e = read_seal_key_file(&open).unwrap_err();
        assert!(
            matches!(e, SealKeyFileError::Exposed { mode: 0o644, .. }),
            "{e}"
        );
        let short = write("short", &[7u8; 31], 0o600);
        assert!(matches!(
            read_seal_key_file(&short).unwrap_err(),
            SealKeyFileError::Size { len: 31, .. }
        ));
        let long = write("long", &[7u8; 4096], 0o600);
        let e = read_seal_key_file(&long).unwrap_err();
        assert!(matches!(e, SealKeyFileError::Size { len: 4096, .. }), "{e}");
        assert!(matches!(
            read_seal_key_file(dir.path()).unwrap_err(),
            SealKeyFileError::NotRegular { .. }
        ));
        assert!(matches!(
            read_seal_key_file(&dir.path().join("missing")).unwrap_err(),
            SealKeyFileError::Read { .. }
        ));
    }
}
