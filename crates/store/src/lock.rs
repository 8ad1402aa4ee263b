//! The per-`state_dir` lock: one exclusive `flock` on `state_dir/lock`.
//!
//! The lock belongs to an open file description, so it is released when the holder exits,
//! however it exits (a SIGKILL included): there is never a stale lock to clean up. Two
//! processes, or two `Store::lock` calls in one process, never hold it at once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, OFlags};

use super::error::{Error, Result};

/// The lock file's name inside `state_dir`.
pub const LOCK_FILE: &str = "lock";

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct LockFile {
    _file: File,
}

impl LockFile {
    /// Takes the lock, waiting for another holder when `wait`, else failing with
    /// [`Error::Locked`].
    pub fn acquire(state_dir: &Path, wait: bool) -> Result<LockFile> {
        let path: PathBuf = state_dir.join(LOCK_FILE);
        // Never opened when it is not a regular file: opening a device may act on it.
        Error::unless_file(&path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // The flag's bit pattern fits the C int that open(2) takes.
            .custom_flags(
                (OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY).bits()
                    as i32,
            )
            .open(&path)
            .map_err(|e| Error::io("opening lock file", &path, e))?;
        // What was put there between the look and the open is refused the same way.
        let kind = file
            .metadata()
            .map_err(|e| Error::io("opening lock file", &path, e))?
            .file_type();
        if !kind.is_file() {
            return Err(Error::NotOurs {
                path,
                what: certkeeper_base::fsutil::kind_name(kind).to_owned(),
            });
        }
        let op = if wait {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        loop {
            match rustix::fs::flock(&file, op) {
                Ok(()) => return Ok(LockFile { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => return Err(Error::Locked { path }),
                Err(e) => return Err(Error::io("locking", &path, io::Error::from(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = LockFile::acquire(dir.path(), false).expect("first lock");
        let err = LockFile::acquire(dir.path(), false).expect_err("second lock must fail");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(first);
        LockFile::acquire(dir.path(), false).expect("lock after release");
    }
}
