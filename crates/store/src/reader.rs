//! Reading a live pair the way a monitoring check must: the fullchain, the private key and
//! their manifest of one generation, even while a renewal beside it switches `.live` to the
//! next. Each live path is a link through `.certkeeper-<name>.live` (see the README's store
//! section); resolving that link once, as a directory handle, and reading the three files
//! relative to the handle pins one generation. Reading the three paths one by one could
//! mix two generations and report a false integrity failure.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::derived::Derived;
use super::live::{FULLCHAIN_FILE, MANIFEST_FILE, PRIVKEY_FILE};
use super::manifest::Manifest;
use certkeeper_base::fsutil::MAX_FILE;

/// One generation's files, each as its read ended.
#[derive(Debug)]
pub struct LivePair {
    /// The fullchain.
    pub fullchain: io::Result<Vec<u8>>,
    /// The private key (permission denied for a monitoring user, typically).
    pub privkey: io::Result<Vec<u8>>,
    /// The manifest written with them.
    pub manifest: io::Result<Option<Manifest>>,
    /// Each derived file asked for: read from the same generation when its live path is
    /// certkeeper's link, from the path as it is otherwise.
    pub derived: Vec<(Derived, io::Result<Vec<u8>>)>,
}

/// Reads the live pair of certificate `name` as one generation, when its live paths are
/// certkeeper's links into generations; `None` otherwise (plain files, not written by
/// certkeeper, or not yet): the caller reads the paths as they are.
pub fn read_live_pair(name: &str, fullchain: &Path, privkey: &Path) -> Option<LivePair> {
    read_live_files(name, fullchain, privkey, &[])
}

/// [`read_live_pair`], with the derived files at `derived` read from the same generation.
pub fn read_live_files(
    name: &str,
    fullchain: &Path,
    privkey: &Path,
    derived: &[(Derived, &Path)],
) -> Option<LivePair> {
    let dir = fullchain.parent()?;
    let live = PathBuf::from(format!(".certkeeper-{name}.live"));
    let points_into = |path: &Path, file: &str| {
        std::fs::read_link(path)
            .is_ok_and(|target| target == live.join(file) || target == dir.join(&live).join(file))
    };
    if !points_into(fullchain, FULLCHAIN_FILE) || !points_into(privkey, PRIVKEY_FILE) {
        return None;
    }
    // A generation may be pruned between opening `.live` and reading from it (a renewal
    // beside this read): then the next one is read.
    let ours: Vec<(Derived, &Path, bool)> = derived
        .iter()
        .map(|&(d, path)| (d, path, points_into(path, d.file_name())))
        .collect();
    for _ in 0..3 {
        let pair = read_generation(&dir.join(&live), &ours);
        let gone = |r: &io::Result<Vec<u8>>| {
            r.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        };
        if !gone(&pair.fullchain) && !gone(&pair.privkey) {
            return Some(pair);
        }
    }
    Some(read_generation(&dir.join(&live), &ours))
}

/// The files of the generation `live` names; each derived file whose flag is false is read
/// at its path instead.
fn read_generation(live: &Path, derived: &[(Derived, &Path, bool)]) -> LivePair {
    let by_path = |path: &Path| certkeeper_base::fsutil::read_regular(path, MAX_FILE);
    let generation = match rustix::fs::open(
        live,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let err = || io::Error::from(e);
            return LivePair {
                fullchain: Err(err()),
                privkey: Err(err()),
                manifest: Err(err()),
                derived: derived
                    .iter()
                    .map(|&(d, path, ours)| (d, if ours { Err(err()) } else { by_path(path) }))
                    .collect(),
            };
        }
    };
    let read = |file: &str| -> io::Result<Vec<u8>> {
        let fd = rustix::fs::openat(
            generation.as_fd(),
            file,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        certkeeper_base::fsutil::read_open(File::from(fd), MAX_FILE)
    };
    let manifest = match read(MANIFEST_FILE) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    LivePair {
        fullchain: read(FULLCHAIN_FILE),
        privkey: read(PRIVKEY_FILE),
        manifest,
        derived: derived
            .iter()
            .map(|&(d, path, ours)| {
                (
                    d,
                    if ours {
                        read(d.file_name())
                    } else {
                        by_path(path)
                    },
                )
            })
            .collect(),
    }
}
