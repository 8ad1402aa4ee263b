//! File helpers.
//!
//! - Reading: [`read_regular`] is how certkeeper reads every file it is given or keeps
//!   (certificates, keys, manifests, the config, secret files, trust roots, state records,
//!   accounts): only a regular file, opened without blocking (a FIFO at a path must not hang
//!   a pass that holds the lock), and at most a limit however large the file claims to be (a
//!   link to `/dev/zero`, a `/proc` entry whose size says 0). Anything else is an error that
//!   says what is at the path.
//!
//! - Writing: [`foreign_file`] and [`foreign_dir`] say what sits at a path certkeeper is about
//!   to write when it is not something certkeeper may replace (a device, a FIFO, a socket, a
//!   link to one of them): every writer asks them first and refuses, changing nothing.
//!
//! Writing is the store's (certkeeper-store): its `StateDir` for everything under state_dir, the
//! store's live-pair machinery for certificates.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most certkeeper reads of a certificate, key, manifest, state record, account, secret
/// or trust-roots file: 1 MiB (a certificate chain is a few KiB).
pub const MAX_FILE: u64 = 1024 * 1024;

/// The most certkeeper reads of a config file: 1 MiB.
pub const MAX_CONFIG: u64 = 1024 * 1024;

/// Reads the regular file at `path` (following symlinks), at most `limit` bytes, without
/// ever blocking on it. A FIFO, socket, device or directory is refused with what it is; a
/// file with more than `limit` bytes is refused too, without reading past the limit.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_with(path, limit, false)
}

/// [`read_regular`] without following a symlink at the last component.
pub fn read_regular_nofollow(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_with(path, limit, true)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn read_with(path: &Path, limit: u64, nofollow: bool) -> io::Result<Vec<u8>> {
    use rustix::fs::OFlags;
    let mut flags = OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    if nofollow {
        flags |= OFlags::NOFOLLOW;
    }
    // O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer.
    // The flag's bit pattern fits the C int that open(2) takes.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)?;
    read_open(file, limit)
}

/// Reads a file opened without blocking (O_NONBLOCK), as [`read_regular`] does: a regular
/// file only, at most `limit` bytes.
pub fn read_open(mut file: fs::File, limit: u64) -> io::Result<Vec<u8>> {
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind_name(kind)),
        ));
    }
    // A regular file's reads never block; its size may lie (procfs says 0), so the limit is
    // enforced on what is read, not on what the metadata claims.
    let mut bytes = Vec::new();
    let size = meta.len();
    if size > 0 && size <= limit {
        // A file that says its size (a real file system's) is read in one call asking for
        // one byte more: on a regular file, a read that returns less than asked is at the
        // end. Only a file that grew meanwhile needs the general loop below.
        bytes.resize(size as usize + 1, 0);
        let n = loop {
            match file.read(&mut bytes) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        bytes.truncate(n);
        if n as u64 <= size {
            return Ok(bytes);
        }
    }
    (&mut file)
        .take(limit + 1 - bytes.len() as u64)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} KiB", limit / 1024),
        ));
    }
    Ok(bytes)
}

/// What a file type is, as messages name it: "a FIFO", "a character device", ...
pub fn kind_name(kind: fs::FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symlink"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// What is at `path` when certkeeper must not put a file of its own there: anything but
/// nothing, a regular file, or a symlink to a regular file or to nothing (the link itself is
/// what a rename replaces, never what it points at). `None` when the write may go ahead;
/// otherwise what is there ("a FIFO", "a symlink to a character device"). Nothing is opened.
pub fn foreign_file(path: &Path) -> Option<String> {
    let meta = fs::symlink_metadata(path).ok()?;
    let kind = meta.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_symlink() {
        return match fs::metadata(path) {
            Ok(target) if !target.is_file() => {
                Some(format!("a symlink to {}", kind_name(target.file_type())))
            }
            _ => None,
        };
    }
    Some(kind_name(kind).to_owned())
}

/// What is at `path` when it is a device, a FIFO or a socket, or a symlink to one: what no
/// write of certkeeper's may ever replace, looked at before anything is done. `None` for
/// anything else (nothing, a file, a directory, a link to one of them). Nothing is opened.
pub fn special(path: &Path) -> Option<String> {
    let is_special = |kind: fs::FileType| {
        kind.is_fifo() || kind.is_socket() || kind.is_char_device() || kind.is_block_device()
    };
    let kind = fs::symlink_metadata(path).ok()?.file_type();
    if kind.is_symlink() {
        let target = fs::metadata(path).ok()?.file_type();
        return is_special(target).then(|| format!("a symlink to {}", kind_name(target)));
    }
    is_special(kind).then(|| kind_name(kind).to_owned())
}

/// What is at `path` when certkeeper must not use it as a directory to write in: anything
/// but nothing or a directory (followed through symlinks when `follow`). `None` when it
/// may; otherwise what is there.
pub fn foreign_dir(path: &Path, follow: bool) -> Option<String> {
    let meta = fs::symlink_metadata(path).ok()?;
    let kind = meta.file_type();
    if kind.is_dir() {
        return None;
    }
    if kind.is_symlink() {
        return match fs::metadata(path) {
            Ok(target) if follow && target.is_dir() => None,
            Ok(target) => Some(format!("a symlink to {}", kind_name(target.file_type()))),
            Err(_) if follow => None,
            Err(_) => Some("a symlink to nothing".into()),
        };
    }
    Some(kind_name(kind).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_only_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"hello").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"hello");
        let err = read_regular(&file, 4).unwrap_err();
        assert_eq!(err.to_string(), "larger than 0 KiB");
        // A FIFO with no writer: refused at once, never waited on.
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = read_regular(&fifo, MAX_FILE).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file (a FIFO)");
        // A device that never ends, through a link.
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = read_regular(&zero, MAX_FILE).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file (a character device)");
        let err = read_regular_nofollow(&zero, MAX_FILE).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        assert_eq!(
            read_regular(dir.path(), MAX_FILE).unwrap_err().to_string(),
            "not a regular file (a directory)"
        );
        // A file that says its size is read whole, and never past the limit.
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 5000]).unwrap();
        assert_eq!(read_regular(&big, 5000).unwrap().len(), 5000);
        assert!(read_regular(&big, 4999).is_err());
        // A procfs file says it is empty; what it holds is read, bounded.
        let status = read_regular(Path::new("/proc/self/status"), MAX_FILE).unwrap();
        assert!(!status.is_empty());
        assert!(read_regular(Path::new("/proc/self/status"), 16).is_err());
    }
}
