//! `state_dir` and every write under it.
//!
//! ```text
//! state_dir/                 0711: entered by every user, listed by none
//!   lock                     the pass lock (flock), see `lock`
//!   clean                    present: no command that wrote here was interrupted since
//!   pass.json, ari.json      the last pass, the CA's renewal windows: recomputable caches
//!   alerted.json             when each failure was last alerted (written under the lock)
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
//!
//! The `clean` marker spares a pass that finds nothing to do every per-certificate look for
//! leftovers: the first write of a command removes it durably (before anything else is
//! written, here or at the live paths), and the command puts it back when it ends with
//! nothing half-done. Absent (a crash, an older version, a failed write), the next command
//! that writes looks everywhere and recovers every certificate. Caches (`pass.json`,
//! `ari.json`) are not fsynced and do not count as writes: a crash may lose them, and their
//! fixed temporary names are removed whenever the lock is taken.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The marker whose presence says that no command that wrote under `state_dir` was
/// interrupted since.
const CLEAN_FILE: &str = "clean";

/// The caches kept directly under `state_dir`.
pub(crate) const CACHES: [&str; 3] = ["pass.json", "ari.json", "alerted.json"];

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
    marks: Arc<Marks>,
}

/// What the commands of this process did to the `clean` marker, shared by every clone.
#[derive(Debug, Default)]
struct Marks {
    /// The marker was removed (or found absent) before a first write.
    dirty: AtomicBool,
    /// A write failed: what it left is not known, so the marker is not put back.
    failed: AtomicBool,
    /// Writes wait for [`StateDir::sync`] to be durable.
    unsynced: AtomicBool,
}

/// When a write under state_dir must be durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durable {
    /// Before the write returns (accounts, a local CA: what later steps rely on).
    Now,
    /// At the next [`StateDir::sync`], which a pass makes once at its end (records and kept
    /// material of many certificates: a crash before it may lose them, which costs a retry
    /// sooner or an order again, never a mixed file).
    AtSync,
}

impl StateDir {
    /// Opens `state_dir` for writing, creating it (and its parents) when missing, and makes it
    /// 0711, unless another user owns it: then its mode is left alone and a warning says so.
    pub fn open(root: impl AsRef<Path>) -> Result<StateDir> {
        let root = root.as_ref().to_owned();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Self::check_shared(&root)?,
            Ok(m) => {
                return Err(Error::NotOurs {
                    what: certkeeper_base::fsutil::kind_name(m.file_type()).to_owned(),
                    path: root,
                });
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
            Ok(meta) if certkeeper_base::perms::foreign_owner(&meta) => {
                certkeeper_base::perms::warn_once(
                    &root,
                    &format!(
                        "state_dir is owned by uid {} (mode {}), neither this user nor root; its mode is left as it is",
                        meta.uid(),
                        certkeeper_base::perms::mode(&meta)
                    ),
                )
            }
            _ => fs::set_permissions(&root, fs::Permissions::from_mode(STATE_DIR_MODE))
                .map_err(|e| Error::io("changing mode of", &root, e))?,
        }
        Ok(StateDir {
            root,
            writable: true,
            marks: Arc::default(),
        })
    }

    /// Refuses, before anything is written, a state directory where a device, FIFO or
    /// socket (or a link to one) sits at a name every certificate shares: the lock, the
    /// `clean` marker, the caches, the areas. (Anything else out of place there is refused
    /// by the write that meets it.)
    fn check_shared(root: &Path) -> Result<()> {
        [super::LOCK_FILE, CLEAN_FILE]
            .iter()
            .chain(CACHES.iter())
            .chain(AREAS.iter())
            .try_for_each(|name| Error::if_special(&root.join(name)))
    }

    /// Refuses, before anything is written for certificate `name` (whose issuers are
    /// `issuers`), a device, FIFO or socket (or a link to one) where certkeeper writes under
    /// `state_dir` for it: its state record, journal, kept material, snapshots, its issuers'
    /// directories. The error names the path and what is there.
    pub fn check_certificate(&self, name: &str, issuers: &[String]) -> Result<()> {
        let json = format!("{name}.json");
        Error::if_special(&self.join(&["state", &json]))?;
        Error::if_special(&self.join(&["journal", &json]))?;
        Error::if_special(&self.join(&["pending", name]))?;
        let snapshots = self.join(&["snapshots", name]);
        Error::if_special(&snapshots)?;
        // Each snapshot is a directory; anything else under a snapshot's name would be
        // pruned or numbered over.
        for entry in fs::read_dir(&snapshots).into_iter().flatten().flatten() {
            let numbered = entry
                .file_name()
                .to_str()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if numbered {
                Error::if_special(&entry.path())?;
            }
        }
        for issuer in issuers {
            Error::if_special(&self.join(&["ca", issuer]))?;
            Error::if_special(&self.join(&["accounts", issuer]))?;
        }
        Ok(())
    }

    /// A state directory that is only read: every write is refused (a dry run writes
    /// nothing).
    pub fn read_only(root: impl AsRef<Path>) -> StateDir {
        StateDir {
            root: root.as_ref().to_owned(),
            writable: false,
            marks: Arc::default(),
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

    /// Replaces `state_dir/<dir...>/<name>` whole with `bytes`, creating the directories on
    /// the way; durable as `durable` says.
    pub fn write_file(
        &self,
        dir: &[&str],
        name: &str,
        bytes: &[u8],
        mode: u32,
        durable: Durable,
    ) -> Result<()> {
        self.writing(durable, || {
            let dir = self.area(dir)?;
            atomic::replace_file(&dir, name, bytes, perm(mode), true)
        })
    }

    /// Replaces the cache `state_dir/<name>` (one of `pass.json`, `ari.json`,
    /// `alerted.json`) whole, without fsync: it can be recomputed, and a crash may lose it
    /// but never mixes it.
    pub fn write_cache(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        debug_assert!(CACHES.contains(&name));
        atomic::replace_file(&self.root, name, bytes, Perm::PRIVATE, false)
    }

    /// Puts the directory `state_dir/<dir...>/<name>` holding `files` (name, content, mode)
    /// in place whole; the directory already there is replaced when `replace`, and makes
    /// this fail otherwise. Durable as `durable` says.
    pub fn write_dir(
        &self,
        dir: &[&str],
        name: &str,
        files: &[(&str, &[u8], u32)],
        replace: bool,
        durable: Durable,
    ) -> Result<()> {
        self.writing(durable, || {
            let parent = self.area(dir)?;
            let mut full = dir.to_vec();
            full.push(name);
            let files: Vec<(&str, &[u8], Perm)> =
                files.iter().map(|&(f, b, m)| (f, b, perm(m))).collect();
            atomic::put_dir(&parent, name, &files, dir_mode(&full), replace)
        })
    }

    /// Removes `state_dir/<dir...>/<name>` (a file or a whole directory), durable at the
    /// next [`StateDir::sync`]; nothing there is not an error.
    pub fn remove(&self, dir: &[&str], name: &str) -> Result<()> {
        let parent = self.join(dir);
        let path = parent.join(name);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            _ => self.writing(Durable::AtSync, || {
                atomic::remove_tree(&path)?;
                atomic::sync_dir(&parent)
            }),
        }
    }

    /// Opens the way to `state_dir/<dir...>` for every user (0711 on each directory under
    /// `state_dir`): for a local CA made before its root was exported.
    pub fn open_way(&self, dir: &[&str]) -> Result<()> {
        let closed = (1..=dir.len())
            .map(|depth| self.join(&dir[..depth]))
            .filter(|path| {
                fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0o111)
            })
            .collect::<Vec<_>>();
        if closed.is_empty() {
            return Ok(());
        }
        self.writing(Durable::Now, || {
            for path in &closed {
                fs::set_permissions(path, fs::Permissions::from_mode(TRAVERSE_MODE))
                    .map_err(|e| Error::io("changing mode of", path, e))?;
            }
            Ok(())
        })
    }

    /// Whether no command that wrote here was interrupted since the `clean` marker was put
    /// back: then nothing is half-done, here or at the live paths.
    pub fn is_clean(&self) -> bool {
        fs::symlink_metadata(self.root.join(CLEAN_FILE)).is_ok_and(|m| m.is_file())
    }

    /// Before this process's first write: removes the `clean` marker durably.
    pub(crate) fn mark_dirty(&self) -> Result<()> {
        self.check_writable()?;
        if self.marks.dirty.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let path = self.root.join(CLEAN_FILE);
        // Only the marker certkeeper made is removed, never a node someone put there.
        let removed = Error::unless_file(&path).and_then(|()| match fs::remove_file(&path) {
            Ok(()) => atomic::sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        });
        if removed.is_err() {
            self.marks.dirty.store(false, Ordering::SeqCst);
        }
        removed
    }

    /// Notes that a write failed: the `clean` marker is not put back by this process.
    pub(crate) fn note_failure(&self) {
        self.marks.failed.store(true, Ordering::SeqCst);
    }

    /// Puts the `clean` marker back, unless a write of this process failed. Not fsynced: if a
    /// crash loses it, the next command looks everywhere once.
    pub(crate) fn mark_clean(&self) -> Result<()> {
        if self.marks.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let text =
            b"No certkeeper command that wrote here was interrupted since this file was made.\n";
        atomic::replace_file(&self.root, CLEAN_FILE, text, Perm::PRIVATE, false)?;
        self.marks.dirty.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Whether this process wrote since the `clean` marker was last there.
    pub(crate) fn is_dirty(&self) -> bool {
        self.marks.dirty.load(Ordering::SeqCst)
    }

    /// Runs a write: the marker is removed first, and a failure is noted. With
    /// [`Durable::AtSync`] its fsyncs are left to [`StateDir::sync`].
    pub(crate) fn writing<T>(
        &self,
        durable: Durable,
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.mark_dirty()?;
        let result = match durable {
            Durable::Now => write(),
            Durable::AtSync => {
                self.marks.unsynced.store(true, Ordering::SeqCst);
                atomic::unsynced(write)
            }
        };
        result.inspect_err(|_| self.note_failure())
    }

    /// Makes the writes made with [`Durable::AtSync`] durable: one `syncfs` of state_dir's
    /// file system. A failure is noted (the `clean` marker is not put back) and returned.
    pub fn sync(&self) -> Result<()> {
        if !self.marks.unsynced.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        atomic::syncfs(&self.root).inspect_err(|_| self.note_failure())
    }

    /// Takes the state_dir lock, waiting for another holder when `wait`, else failing with
    /// [`Error::Locked`].
    pub(crate) fn lock(&self, wait: bool) -> Result<LockFile> {
        self.check_writable()?;
        LockFile::acquire(&self.root, wait)
    }

    /// Refuses a state_dir where a directory certkeeper keeps as its own (an area, or a
    /// directory of an issuer or a certificate in `accounts`, `ca`, `pending` or `snapshots`)
    /// is a symbolic link: [`Error::LinkedDir`] names the first one found. Nothing is written
    /// through such a link, and nothing read through it is trusted.
    pub(crate) fn check_own_dirs(&self) -> Result<()> {
        for area in AREAS {
            let path = self.root.join(area);
            // Only links are refused here; anything else out of place at an area's name is
            // refused by the write that meets it, for the certificates that need it.
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_symlink() => return Err(atomic::linked_dir(&path)),
                Ok(m) if m.is_dir() && area != "state" && area != "journal" => {}
                _ => continue,
            }
            let entries = fs::read_dir(&path).map_err(|e| Error::io("listing", &path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("listing", &path, e))?;
                if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                    return Err(atomic::linked_dir(&entry.path()));
                }
            }
        }
        Ok(())
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
        if self.is_clean() {
            // Only the caches are written without removing the marker first.
            for cache in CACHES {
                let tmp = self.root.join(format!("{TMP_PREFIX}{cache}"));
                if fs::remove_file(&tmp).is_ok() {
                    removed.push(tmp);
                }
            }
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
            .write_file(&["state"], "www.json", b"one", 0o600, Durable::Now)
            .unwrap();
        state
            .write_file(&["state"], "www.json", b"two", 0o600, Durable::Now)
            .unwrap();
        assert_eq!(
            fs::read(state.join(&["state", "www.json"])).unwrap(),
            b"two"
        );
        let files: [(&str, &[u8], u32); 2] = [("a", b"1", 0o644), ("k", b"2", 0o600)];
        state
            .write_dir(&["pending"], "www", &files, true, Durable::Now)
            .unwrap();
        let files: [(&str, &[u8], u32); 1] = [("a", b"3", 0o644)];
        state
            .write_dir(&["pending"], "www", &files, true, Durable::Now)
            .unwrap();
        let pending = state.join(&["pending", "www"]);
        assert_eq!(fs::read(pending.join("a")).unwrap(), b"3");
        assert!(!pending.join("k").exists());
        // Without `replace`, a directory there is kept and the write fails.
        assert!(
            state
                .write_dir(&["pending"], "www", &files, false, Durable::Now)
                .is_err()
        );
        assert_eq!(fs::read(pending.join("a")).unwrap(), b"3");
        // The way to a local CA is 0711, everything else 0700.
        state
            .write_dir(&["ca"], "internal", &files, false, Durable::Now)
            .unwrap();
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
            .write_dir(&["pending"], "www", &files, true, Durable::Now)
            .unwrap_err();
        assert!(matches!(err, Error::LinkedDir { .. }), "{err}");
        assert!(matches!(
            state.check_own_dirs(),
            Err(Error::LinkedDir { .. })
        ));
        fs::create_dir(state.join(&["state"])).unwrap();
        std::os::unix::fs::symlink(
            victim.join("planted"),
            state.join(&["state", ".certkeeper-tmp-www.json"]),
        )
        .unwrap();
        state
            .write_file(&["state"], "www.json", b"{}", 0o600, Durable::Now)
            .unwrap();
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    }

    #[test]
    fn a_read_only_state_dir_writes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::read_only(root.path().join("state"));
        assert!(
            state
                .write_file(&["state"], "a.json", b"{}", 0o600, Durable::Now)
                .is_err()
        );
        assert!(state.lock(false).is_err());
        assert!(!root.path().join("state").exists());
    }
}
