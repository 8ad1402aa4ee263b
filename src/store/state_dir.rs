//! `state_dir` and every write under it.
//!
//! ```text
//! state_dir/                 0711: entered by every user, listed by none
//!   lock                     the pass lock (flock), see `lock`
//!   accounts/<issuer>/       ACME account credentials
//!   ca/<issuer>/             a local CA (0711, its root.pem 0644: exported to every user)
//!   state/<name>.json        what happened to a certificate (attempts, failures, backoff)
//!   pending/<name>/          issued material not yet live
//!   journal/<name>.json      a stage in flight
//!   snapshots/<name>/<id>/   earlier live pairs
//! ```
//!
//! [`StateDir`] owns that layout and makes every write there, on the store's crash-safe
//! primitives: a file is replaced whole (temporary name, fsync, rename, directory fsync), a
//! directory is put in place whole (built under a temporary name, then one rename, exchanging
//! it with the old one), nothing is created through a symlink planted at a name certkeeper
//! creates. Every temporary name begins with `.certkeeper-tmp-`, and
//! [`StateDir::clean_leftovers`] removes what a crash left of them.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::atomic::{self, Perm, TMP_PREFIX};
use super::error::{Error, Result};
use super::lock::LockFile;
use super::snapshot::Snapshots;
use super::stage::Journals;

/// Mode of `state_dir`: entered by every user (a monitoring user reads the local CA's exported
/// root), listed by none; everything inside stays private (0700/0600).
pub const STATE_DIR_MODE: u32 = 0o711;

/// Mode of the directories on the way to a local CA's exported root.
const TRAVERSE_MODE: u32 = 0o711;

/// Mode of every other directory under `state_dir`.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// The directories under `state_dir` that certkeeper writes in, each one level deep at most
/// below these (`accounts/<issuer>/`, `pending/<name>/`, ...).
const AREAS: [&str; 6] = ["accounts", "ca", "state", "pending", "journal", "snapshots"];

/// A state directory. Reading needs nothing but its path; every write goes through a
/// writable `StateDir` ([`StateDir::open`]). A read-only one ([`StateDir::read_only`], for dry
/// runs) refuses every write.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
    writable: bool,
}

impl StateDir {
    /// Opens `state_dir` for writing, creating it (and its parents) when missing, and makes it
    /// 0711, unless another user owns it: then its mode is left alone and a warning says so.
    pub fn open(root: impl AsRef<Path>) -> Result<StateDir> {
        let root = root.as_ref().to_owned();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                let e = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
                return Err(Error::io("opening state directory", root, e));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("creating directory", parent, e))?;
                }
                match atomic::create_dir(&root, STATE_DIR_MODE) {
                    Err(Error::Planted { .. }) if root.is_dir() => {}
                    other => other?,
                }
            }
            Err(e) => return Err(Error::io("opening state directory", root, e)),
        }
        match fs::metadata(&root) {
            Ok(meta) if crate::perms::foreign_owner(&meta) => crate::perms::warn_once(
                &root,
                &format!(
                    "state_dir is owned by uid {} (mode {}), neither this user nor root; its mode is left as it is",
                    meta.uid(),
                    crate::perms::mode(&meta)
                ),
            ),
            _ => fs::set_permissions(&root, fs::Permissions::from_mode(STATE_DIR_MODE))
                .map_err(|e| Error::io("changing mode of", &root, e))?,
        }
        Ok(StateDir {
            root,
            writable: true,
        })
    }

    /// A state directory that is only read: every write is refused (a dry run writes
    /// nothing).
    pub fn read_only(root: impl AsRef<Path>) -> StateDir {
        StateDir {
            root: root.as_ref().to_owned(),
            writable: false,
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Whether writes are allowed (false for a dry run).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// `state_dir/<dir...>`.
    pub fn join(&self, dir: &[&str]) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(dir);
        path
    }

    /// Replaces `state_dir/<dir...>/<name>` whole with `bytes`, durably, creating the
    /// directories on the way.
    pub fn write_file(&self, dir: &[&str], name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let dir = self.area(dir)?;
        atomic::replace_file(&dir, name, bytes, perm(mode), true)
    }

    /// Puts the directory `state_dir/<dir...>/<name>` holding `files` (name, content, mode)
    /// in place whole, durably; the directory already there is replaced when `replace`, and
    /// makes this fail otherwise.
    pub fn write_dir(
        &self,
        dir: &[&str],
        name: &str,
        files: &[(&str, &[u8], u32)],
        replace: bool,
    ) -> Result<()> {
        let parent = self.area(dir)?;
        let mut full = dir.to_vec();
        full.push(name);
        let files: Vec<(&str, &[u8], Perm)> =
            files.iter().map(|&(f, b, m)| (f, b, perm(m))).collect();
        atomic::put_dir(&parent, name, &files, dir_mode(&full), replace)
    }

    /// Removes `state_dir/<dir...>/<name>` (a file or a whole directory), durably; nothing
    /// there is not an error.
    pub fn remove(&self, dir: &[&str], name: &str) -> Result<()> {
        self.check_writable()?;
        let parent = self.join(dir);
        let path = parent.join(name);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            _ => {
                atomic::remove_tree(&path)?;
                atomic::sync_dir(&parent)
            }
        }
    }

    /// Opens the way to `state_dir/<dir...>` for every user (0711 on each directory under
    /// `state_dir`): for a local CA made before its root was exported.
    pub fn open_way(&self, dir: &[&str]) -> Result<()> {
        self.check_writable()?;
        for depth in 1..=dir.len() {
            let path = self.join(&dir[..depth]);
            fs::set_permissions(&path, fs::Permissions::from_mode(TRAVERSE_MODE))
                .map_err(|e| Error::io("changing mode of", &path, e))?;
        }
        Ok(())
    }

    /// Takes the state_dir lock, waiting for another holder when `wait`, else failing with
    /// [`Error::Locked`].
    pub(crate) fn lock(&self, wait: bool) -> Result<LockFile> {
        self.check_writable()?;
        LockFile::acquire(&self.root, wait)
    }

    /// The journals of stages in flight.
    pub(crate) fn journals(&self) -> Journals {
        Journals::new(self.join(&["journal"]))
    }

    /// The snapshots of certificate `name`.
    pub(crate) fn snapshots(&self, name: &str) -> Snapshots {
        Snapshots::new(self.join(&["snapshots", name]))
    }

    /// Removes every temporary file or directory a crash left under `state_dir` (they may
    /// hold private keys), and returns their paths. Called with the lock held, by every
    /// command that writes; a leftover that cannot be removed is logged and skipped.
    pub fn clean_leftovers(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        if !self.writable {
            return removed;
        }
        let mut dirs = vec![self.root.clone()];
        for area in AREAS {
            let area = self.root.join(area);
            // The area's own subdirectories (accounts/<issuer>/, snapshots/<name>/, ...).
            if let Ok(entries) = fs::read_dir(&area) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .filter(|e| !is_temporary(&e.file_name()))
                        .map(|e| e.path()),
                );
            }
            dirs.push(area);
        }
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let mut removed_here = false;
            for entry in entries.flatten() {
                if !is_temporary(&entry.file_name()) {
                    continue;
                }
                match atomic::remove_tree(&entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "Removed a leftover of an interrupted pass.");
                        removed.push(entry.path());
                        removed_here = true;
                    }
                    Err(e) => {
                        tracing::warn!("Cannot remove a leftover of an interrupted pass: {e}")
                    }
                }
            }
            if removed_here && let Err(e) = atomic::sync_dir(&dir) {
                tracing::warn!("{e}");
            }
        }
        removed
    }

    /// Makes `state_dir/<dir...>` exist as directories (no symlink followed, none made
    /// through one), each with its mode.
    fn area(&self, dir: &[&str]) -> Result<PathBuf> {
        self.check_writable()?;
        for depth in 1..=dir.len() {
            atomic::ensure_dir(&self.join(&dir[..depth]), dir_mode(&dir[..depth]))?;
        }
        Ok(self.join(dir))
    }

    fn check_writable(&self) -> Result<()> {
        match self.writable {
            true => Ok(()),
            false => Err(Error::io(
                "writing in",
                &self.root,
                io::Error::new(io::ErrorKind::PermissionDenied, "a dry run writes nothing"),
            )),
        }
    }
}

/// The mode of `state_dir/<dir...>`: the way to a local CA's root is open to every user.
fn dir_mode(dir: &[&str]) -> u32 {
    match dir.first() {
        Some(&"ca") if dir.len() <= 2 => TRAVERSE_MODE,
        _ => PRIVATE_DIR_MODE,
    }
}

fn perm(mode: u32) -> Perm {
    Perm {
        mode,
        owner: None,
        group: None,
    }
}

/// Whether a name under `state_dir` is a temporary one: [`TMP_PREFIX`], or `.certkeeper-new-`
/// (what a local CA was built under before).
fn is_temporary(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with(TMP_PREFIX) || name.starts_with(".certkeeper-new-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_are_replaced_whole_and_leftovers_removed() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path().join("state")).unwrap();
        state
            .write_file(&["state"], "www.json", b"one", 0o600)
            .unwrap();
        state
            .write_file(&["state"], "www.json", b"two", 0o600)
            .unwrap();
        assert_eq!(
            fs::read(state.join(&["state", "www.json"])).unwrap(),
            b"two"
        );
        let files: [(&str, &[u8], u32); 2] = [("a", b"1", 0o644), ("k", b"2", 0o600)];
        state.write_dir(&["pending"], "www", &files, true).unwrap();
        let files: [(&str, &[u8], u32); 1] = [("a", b"3", 0o644)];
        state.write_dir(&["pending"], "www", &files, true).unwrap();
        let pending = state.join(&["pending", "www"]);
        assert_eq!(fs::read(pending.join("a")).unwrap(), b"3");
        assert!(!pending.join("k").exists());
        // Without `replace`, a directory there is kept and the write fails.
        assert!(state.write_dir(&["pending"], "www", &files, false).is_err());
        assert_eq!(fs::read(pending.join("a")).unwrap(), b"3");
        // The way to a local CA is 0711, everything else 0700.
        state.write_dir(&["ca"], "internal", &files, false).unwrap();
        for (dir, mode) in [
            (vec!["ca"], 0o711),
            (vec!["ca", "internal"], 0o711),
            (vec!["pending"], 0o700),
            (vec!["pending", "www"], 0o700),
            (vec!["state"], 0o700),
        ] {
            let meta = fs::metadata(state.join(&dir)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{dir:?}");
        }
        // What crashes leave: temporary files and directories, one holding a key.
        let leftovers = [
            state.join(&["pending", ".certkeeper-tmp-api"]),
            state.join(&["state", ".certkeeper-tmp-api.json"]),
            state.join(&["ca", ".certkeeper-new-internal-77"]),
            state.join(&["pending", "www", ".certkeeper-tmp-x"]),
        ];
        fs::create_dir(&leftovers[0]).unwrap();
        fs::write(leftovers[0].join("privkey.pem"), b"secret").unwrap();
        fs::write(&leftovers[1], b"{").unwrap();
        fs::create_dir(&leftovers[2]).unwrap();
        fs::write(&leftovers[3], b"x").unwrap();
        let mut removed = state.clean_leftovers();
        removed.sort();
        let mut expected = leftovers.to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        assert!(pending.join("a").exists());
        state.remove(&["pending"], "www").unwrap();
        assert!(!pending.exists());
        state.remove(&["pending"], "www").unwrap();
    }

    #[test]
    fn planted_links_are_never_written_through() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::open(root.path().join("state")).unwrap();
        let victim = root.path().join("victim");
        fs::create_dir(&victim).unwrap();
        // A link where an area goes, and one where a temporary file goes.
        std::os::unix::fs::symlink(&victim, state.join(&["pending"])).unwrap();
        let files: [(&str, &[u8], u32); 1] = [("k", b"secret", 0o600)];
        let err = state
            .write_dir(&["pending"], "www", &files, true)
            .unwrap_err();
        assert!(matches!(err, Error::Planted { .. }), "{err}");
        fs::create_dir(state.join(&["state"])).unwrap();
        std::os::unix::fs::symlink(
            victim.join("planted"),
            state.join(&["state", ".certkeeper-tmp-www.json"]),
        )
        .unwrap();
        state
            .write_file(&["state"], "www.json", b"{}", 0o600)
            .unwrap();
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    }

    #[test]
    fn a_read_only_state_dir_writes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::read_only(root.path().join("state"));
        assert!(
            state
                .write_file(&["state"], "a.json", b"{}", 0o600)
                .is_err()
        );
        assert!(state.lock(false).is_err());
        assert!(!root.path().join("state").exists());
    }
}
