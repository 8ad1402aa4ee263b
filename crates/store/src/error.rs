//! The store's one error type.
//!
//! Every fallible store operation returns [`Error`]. Variants carry the facts (paths,
//! digests, snapshot ids, the OS error) in fields, so a caller can decide what to do without
//! parsing the message; the messages are lowercase, one line, with no final period.

use std::io;
use std::path::PathBuf;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The certificate name cannot be used in file names.
    #[error(
        "invalid certificate name {name:?}: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },

    /// The pair's paths cannot be managed as given.
    #[error("cannot manage {name}: {reason}")]
    InvalidSpec {
        /// The certificate name.
        name: String,
        /// Why the paths were refused.
        reason: String,
    },

    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "writing" or "renaming".
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Something already exists where certkeeper creates a new file, directory or link,
    /// for example a planted symlink; certkeeper never writes through it.
    #[error(
        "refusing to create {path}: something already exists there (a planted symlink?); remove it and retry"
    )]
    Planted {
        /// The path that was occupied.
        path: PathBuf,
    },

    /// Something certkeeper does not replace sits where it writes: a device, a FIFO, a
    /// socket, a link to one of them, or a file where a directory goes (or the reverse).
    /// Nothing was changed.
    #[error(
        "refusing to write {path}: {what} is there, which certkeeper does not replace (it writes only over regular files, the links it made, or nothing); move it away or correct the path"
    )]
    NotOurs {
        /// Where certkeeper was to write.
        path: PathBuf,
        /// What is there, e.g. "a FIFO" or "a symlink to a character device".
        what: String,
    },

    /// A directory certkeeper keeps as its own (an area of state_dir, a snapshot directory, a
    /// generation beside the live files) is a symbolic link: nothing is read or written
    /// through it.
    #[error(
        "{path} is a symbolic link (to {target}) where certkeeper keeps a directory of its own; remove the link (move the directory back if it holds certkeeper's files) and retry"
    )]
    LinkedDir {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },

    /// A state file names something that cannot be one of certkeeper's names (a journal
    /// whose certificate is not the one its file is named after, a snapshot id that is not a
    /// number); the file was moved aside and nothing it says was done.
    #[error("{path} {problem}; it was moved aside to {aside} and nothing it says was done")]
    Tampered {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        problem: String,
        /// Where it is now.
        aside: PathBuf,
    },

    /// Another process holds the state directory's lock.
    #[error("state directory is locked by another certkeeper process (lock file {path})")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The fullchain does not start with a parsable certificate.
    #[error("fullchain of {name} is not usable: {reason}")]
    BadCertificate {
        /// The certificate name.
        name: String,
        /// What the parser said.
        reason: String,
    },

    /// A file read back after writing does not have the digest that was intended.
    #[error(
        "read-back of {path} does not match what was written: expected sha256 {expected}, found {actual}"
    )]
    ReadBack {
        /// The file read back.
        path: PathBuf,
        /// SHA-256 of what was meant to be written, hex.
        expected: String,
        /// SHA-256 of what was read, hex.
        actual: String,
    },

    /// No snapshot with this id exists.
    #[error("no snapshot {id} of {name}")]
    SnapshotNotFound {
        /// The certificate name.
        name: String,
        /// The requested id.
        id: String,
    },

    /// The snapshot no longer matches its manifest and will not be restored.
    #[error("snapshot {id} of {name} is corrupt and will not be restored: {problem}")]
    SnapshotCorrupt {
        /// The certificate name.
        name: String,
        /// The snapshot id.
        id: String,
        /// What does not verify.
        problem: String,
    },

    /// The default rollback found no snapshot to restore.
    #[error("no snapshot of {name} to roll back to: none verifies and differs from the live leaf{}", skipped_note(.corrupt))]
    NoRollbackTarget {
        /// The certificate name.
        name: String,
        /// Ids of snapshots skipped because they do not verify, newest first.
        corrupt: Vec<String>,
    },
    /// A staged pair could not be reverted: nothing of the previous pair is left to restore.
    /// The staged pair stays live, as the only whole pair there is.
    #[error("cannot put the previous pair of {name} back: {reason}; the new pair stays live")]
    RevertImpossible {
        /// The certificate name.
        name: String,
        /// Why.
        reason: String,
    },
}

fn skipped_note(corrupt: &[String]) -> String {
    if corrupt.is_empty() {
        String::new()
    } else {
        format!(" (corrupt: {})", corrupt.join(", "))
    }
}

impl Error {
    /// Wraps an OS error with the operation and path it happened on; an `AlreadyExists`
    /// error from an exclusive create becomes [`Error::Planted`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::AlreadyExists {
            Error::Planted { path }
        } else {
            Error::Io { op, path, source }
        }
    }

    /// [`Error::NotOurs`] when a regular file of certkeeper's may not be put at `path`
    /// (see [`certkeeper_base::fsutil::foreign_file`]).
    pub(crate) fn unless_file(path: &std::path::Path) -> Result<()> {
        match certkeeper_base::fsutil::foreign_file(path) {
            None => Ok(()),
            Some(what) => Err(Error::NotOurs {
                path: path.to_owned(),
                what,
            }),
        }
    }

    /// [`Error::NotOurs`] when `path` is neither absent nor a directory (followed through a
    /// symlink when `follow`; see [`certkeeper_base::fsutil::foreign_dir`]).
    pub(crate) fn unless_dir(path: &std::path::Path, follow: bool) -> Result<()> {
        match certkeeper_base::fsutil::foreign_dir(path, follow) {
            None => Ok(()),
            Some(what) => Err(Error::NotOurs {
                path: path.to_owned(),
                what,
            }),
        }
    }

    /// [`Error::NotOurs`] when a device, FIFO or socket (or a link to one) is at `path`
    /// (see [`certkeeper_base::fsutil::special`]).
    pub(crate) fn if_special(path: &std::path::Path) -> Result<()> {
        match certkeeper_base::fsutil::special(path) {
            None => Ok(()),
            Some(what) => Err(Error::NotOurs {
                path: path.to_owned(),
                what,
            }),
        }
    }

    /// The OS error behind this error, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_lowercase_line() {
        let errors = [
            Error::InvalidName { name: "A b".into() },
            Error::InvalidSpec {
                name: "www".into(),
                reason: "fullchain and privkey are the same path".into(),
            },
            Error::io(
                "writing",
                "/x/y",
                io::Error::from_raw_os_error(28), // ENOSPC
            ),
            Error::io(
                "creating",
                "/x/z",
                io::Error::from(io::ErrorKind::AlreadyExists),
            ),
            Error::Locked {
                path: "/s/lock".into(),
            },
            Error::NotOurs {
                path: "/s/pass.json".into(),
                what: "a FIFO".into(),
            },
            Error::LinkedDir {
                path: "/s/snapshots/www".into(),
                target: "/elsewhere".into(),
            },
            Error::Tampered {
                path: "/s/journal/www.json".into(),
                problem: "names certificate \"../x\"".into(),
                aside: "/s/journal/www.json.rejected".into(),
            },
            Error::BadCertificate {
                name: "www".into(),
                reason: "no certificate".into(),
            },
            Error::ReadBack {
                path: "/x/y".into(),
                expected: "aa".into(),
                actual: "bb".into(),
            },
            Error::SnapshotNotFound {
                name: "www".into(),
                id: "000007".into(),
            },
            Error::SnapshotCorrupt {
                name: "www".into(),
                id: "000007".into(),
                problem: "privkey sha256 differs".into(),
            },
            Error::NoRollbackTarget {
                name: "www".into(),
                corrupt: vec!["000003".into()],
            },
            Error::NoRollbackTarget {
                name: "www".into(),
                corrupt: vec![],
            },
            Error::RevertImpossible {
                name: "www".into(),
                reason: "its generation is gone".into(),
            },
        ];
        for e in &errors {
            let text = e.to_string();
            println!("{text}");
            let first = text.chars().next().expect("non-empty message");
            assert!(!first.is_uppercase(), "{text}");
            assert!(!text.ends_with('.'), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
        assert!(matches!(errors[3], Error::Planted { .. }));
        assert_eq!(
            errors[2].io_error().and_then(io::Error::raw_os_error),
            Some(28)
        );
        assert_eq!(
            errors[12].to_string(),
            "no snapshot of www to roll back to: none verifies and differs from the live leaf (corrupt: 000003)"
        );
    }
}
