//! Crash-safe file primitives that the rest of the store is built from.
//!
//! Every new file, directory or link is created exclusively (`O_CREAT|O_EXCL`, `mkdir`,
//! `symlink`, `renameat2(RENAME_NOREPLACE)`), so a symlink planted at the name is refused
//! instead of followed; files are opened with `O_NOFOLLOW`; data is fsynced before it is
//! named, and the directory is fsynced after it is named. Each write is read back and its
//! SHA-256 compared with what was intended.
//!
//! Outside the store only [`replace_file`] and [`Perm`] are used (the metrics textfile);
//! everything else stays inside the crate.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{OFlags, RenameFlags};

use super::error::{Error, Result};
use certkeeper_base::text::sha256_hex;

/// Mode and ownership of a file to create; `None` leaves the owner or group of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub(crate) mode: u32,
    pub(crate) owner: Option<u32>,
    pub(crate) group: Option<u32>,
}

impl Perm {
    /// A file readable by everyone, owned by the process.
    pub const PUBLIC: Perm = Perm {
        mode: 0o644,
        owner: None,
        group: None,
    };
    /// A file only the process's user can read.
    pub const PRIVATE: Perm = Perm {
        mode: 0o600,
        owner: None,
        group: None,
    };
}

/// Creates `path` exclusively, writes `bytes`, sets mode and ownership, fsyncs it, and
/// reads it back to compare SHA-256. On failure nothing is left at `path`.
///
/// The caller fsyncs the directory once it has created everything it needs there.
pub(crate) fn create_file(path: &Path, bytes: &[u8], perm: Perm) -> Result<()> {
    create_file_with(path, bytes, perm, true)
}

/// [`create_file`], or, when not `durable`, without the fsync and the read-back: for data
/// that can be recomputed when a crash loses it.
fn create_file_with(path: &Path, bytes: &[u8], perm: Perm, durable: bool) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(perm.mode)
        .custom_flags(nofollow())
        .open(path)
        .map_err(|e| Error::io("creating", path, e))?;
    let result = fill(file, path, bytes, perm, durable).and_then(|()| match durable {
        true => check_digest(path, &sha256_hex(bytes)),
        false => Ok(()),
    });
    if result.is_err() {
        // Leave no partial file; the original error is the one worth reporting.
        let _ = fs::remove_file(path);
    }
    result
}

fn fill(mut file: File, path: &Path, bytes: &[u8], perm: Perm, durable: bool) -> Result<()> {
    if perm.owner.is_some() || perm.group.is_some() {
        std::os::unix::fs::fchown(&file, perm.owner, perm.group)
            .map_err(|e| Error::io("changing owner of", path, e))?;
    }
    // Set the mode explicitly: the one given to open() was reduced by the umask.
    file.set_permissions(Permissions::from_mode(perm.mode))
        .map_err(|e| Error::io("changing mode of", path, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("writing", path, e))?;
    if !durable || defer(parent(path)) {
        return Ok(());
    }
    file.sync_all().map_err(|e| Error::io("syncing", path, e))
}

thread_local! {
    /// While [`deferring`] runs on this thread: the file systems whose fsyncs were put off,
    /// by device, each with a directory on it.
    static DEFERRED: std::cell::RefCell<Option<std::collections::BTreeMap<u64, std::path::PathBuf>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `write` with every fsync of these primitives on this thread put off, then makes all
/// of it durable at once: one `syncfs(2)` per file system written. Nothing `write` does is
/// durable before this returns, and all of it is after an `Ok`: a caller that needs one step
/// durable before the next (a generation before the switch to it) puts a `deferring` between
/// them. A thousand swaps then cost a few syncs instead of eight each.
pub(crate) fn deferring<T>(write: impl FnOnce() -> T) -> (T, Result<()>) {
    let (out, touched) = put_off(write);
    // The directory noted may have been removed since (a stage undone on error): any
    // directory above it that is still there is on the same file system.
    let synced = touched.values().try_for_each(|dir| {
        let there = dir.ancestors().find(|d| d.is_dir()).unwrap_or(dir);
        syncfs(there)
    });
    (out, synced)
}

/// Runs `write` with every fsync of these primitives on this thread left out: the caller
/// makes it durable later with [`syncfs`] of the file system written.
pub(crate) fn unsynced<T>(write: impl FnOnce() -> T) -> T {
    put_off(write).0
}

/// Runs `write` with this thread's fsyncs put off; returns what it returned and the file
/// systems it wrote, each with a directory on it.
fn put_off<T>(
    write: impl FnOnce() -> T,
) -> (T, std::collections::BTreeMap<u64, std::path::PathBuf>) {
    let outer = DEFERRED.with(|d| d.borrow_mut().replace(Default::default()));
    let out = write();
    let touched = DEFERRED
        .with(|d| std::mem::replace(&mut *d.borrow_mut(), outer))
        .unwrap_or_default();
    (out, touched)
}

/// Makes everything written on the file system of `dir` durable.
pub(crate) fn syncfs(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| rustix::fs::syncfs(&d).map_err(io::Error::from))
        .map_err(|e| Error::io("syncing the file system of", dir, e))
}

/// Inside [`deferring`]: notes the file system of `dir` and says the fsync is put off.
fn defer(dir: &Path) -> bool {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        None => false,
        Some(touched) => {
            use std::os::unix::fs::MetadataExt;
            // A directory that cannot be looked at cannot be synced later either: the fsync
            // happens now, as without deferring.
            match fs::metadata(dir) {
                Ok(m) => {
                    touched.entry(m.dev()).or_insert_with(|| dir.to_owned());
                    true
                }
                Err(_) => false,
            }
        }
    })
}

/// How every temporary name certkeeper makes outside the live directories begins; what a
/// crash leaves with it is removed by the next command that writes.
pub(crate) const TMP_PREFIX: &str = ".certkeeper-tmp-";

/// Replaces `dir/name` whole with `bytes`: created exclusively as `.certkeeper-tmp-<name>`
/// beside it (whatever a crash left at that name is removed first, a planted link with it,
/// never followed), fsynced and read back, renamed over the target, and the directory
/// fsynced. Without `durable` the fsyncs and the read-back are left out: a crash may then
/// lose the new content, never mix it with the old. On error the temporary file is gone and
/// the old file is intact.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8], perm: Perm, durable: bool) -> Result<()> {
    // A device, FIFO or socket at the target (or a link to one) is not replaced: the rename
    // would swap it for a file without a word.
    Error::unless_file(&dir.join(name))?;
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    remove_tree(&tmp)?;
    create_file_with(&tmp, bytes, perm, durable)?;
    if let Err(e) = fs::rename(&tmp, dir.join(name)) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("renaming onto", dir.join(name), e));
    }
    match durable {
        true => sync_dir(dir),
        false => Ok(()),
    }
}

/// Puts a directory holding `files` at `parent/name` whole. It is built under
/// `.certkeeper-tmp-<name>` (mode `mode`; each file created exclusively, fsynced and read
/// back; the directory fsynced) and takes its place in one rename: exchanged with the
/// directory already there, which is then removed, when `replace`; refused when something
/// is there and not `replace`. A crash at any point leaves the old directory or the new one
/// whole, and perhaps the temporary one, which [`TMP_PREFIX`] marks as a leftover.
pub(crate) fn put_dir(
    parent: &Path,
    name: &str,
    files: &[(&str, &[u8], Perm)],
    mode: u32,
    replace: bool,
) -> Result<()> {
    let tmp = parent.join(format!("{TMP_PREFIX}{name}"));
    let target = parent.join(name);
    // Only a directory of certkeeper's is exchanged (and then removed): anything else there
    // is refused, not swapped away.
    Error::unless_dir(&target, false)?;
    remove_tree(&tmp)?;
    create_dir(&tmp, mode)?;
    let built = files
        .iter()
        .try_for_each(|(file, bytes, perm)| create_file(&tmp.join(file), bytes, *perm))
        .and_then(|()| sync_dir(&tmp));
    let placed = built.and_then(|()| {
        if !replace {
            return rename_noreplace(&tmp, &target);
        }
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            &target,
            RenameFlags::EXCHANGE,
        ) {
            // The old directory is at the temporary name now.
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::NOENT) => rename_noreplace(&tmp, &target),
            Err(e) => Err(Error::io("renaming onto", &target, e.into())),
        }
    });
    // Whatever is at the temporary name now (the new directory on failure, the old one
    // after an exchange) is not wanted.
    let _ = remove_tree(&tmp);
    placed?;
    sync_dir(parent)
}

/// Reads `path` without following a symlink at its last component.
pub(crate) fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    certkeeper_base::fsutil::read_regular_nofollow(path, certkeeper_base::fsutil::MAX_FILE)
}

/// Reads and parses a JSON file without following a symlink at its last component.
pub(crate) fn read_json_nofollow<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_nofollow(path).map_err(|e| Error::io("reading", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::io(
            "parsing",
            path,
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })
}

/// Reads `path` back (not following a symlink) and compares its SHA-256 with `expected`.
pub(crate) fn check_digest(path: &Path, expected: &str) -> Result<()> {
    let bytes = read_nofollow(path).map_err(|e| Error::io("reading back", path, e))?;
    let actual = sha256_hex(&bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(Error::ReadBack {
            path: path.to_owned(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

/// Creates the directory `path` exclusively with `mode` (umask ignored).
pub(crate) fn create_dir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("creating directory", path, e))?;
    fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| Error::io("changing mode of", path, e))
}

/// Makes `dir` a directory, creating it and its missing parents with `mode` (umask ignored);
/// a symlink or anything else at one of the names it creates is refused, never followed.
pub(crate) fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.is_symlink() => Err(linked_dir(dir)),
        Ok(m) => Err(Error::NotOurs {
            path: dir.to_owned(),
            what: certkeeper_base::fsutil::kind_name(m.file_type()).to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                ensure_dir(parent, mode)?;
            }
            match create_dir(dir, mode) {
                // Another thread of this process made it first: fine.
                Err(Error::Planted { .. })
                    if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) =>
                {
                    Ok(())
                }
                other => other,
            }
        }
        Err(e) => Err(Error::io("reading", dir, e)),
    }
}

/// Whether `dir`, a directory certkeeper keeps as its own, is there: `Ok(false)` when
/// absent, [`Error::LinkedDir`] when it is a symbolic link (nothing is read or written
/// through it), [`Error::Planted`] when something else is there.
pub(crate) fn own_dir(dir: &Path) -> Result<bool> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(m) if m.is_symlink() => Err(linked_dir(dir)),
        Ok(m) => Err(Error::NotOurs {
            path: dir.to_owned(),
            what: certkeeper_base::fsutil::kind_name(m.file_type()).to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("reading", dir, e)),
    }
}

/// The error for a symbolic link at `path` where a directory of certkeeper's belongs.
pub(crate) fn linked_dir(path: &Path) -> Error {
    Error::LinkedDir {
        path: path.to_owned(),
        target: fs::read_link(path).unwrap_or_default(),
    }
}

/// Fsyncs a directory, so that the names created or renamed in it are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    if defer(path) {
        return Ok(());
    }
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io("syncing directory", path, e))
}

/// Points the symlink `path` at `target` atomically: a new link is created under the unused
/// name `tmp` in the same directory and renamed over `path`; then the directory is fsynced.
/// A reader resolving `path` sees the old target or the new one, never nothing.
pub(crate) fn replace_symlink(target: &Path, tmp: &Path, path: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, tmp).map_err(|e| Error::io("creating link", tmp, e))?;
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(Error::io("renaming link onto", path, e));
    }
    sync_dir(parent(path))
}

/// Renames `from` to `to`, refusing to replace anything at `to`.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        RenameFlags::NOREPLACE,
    )
    .map_err(|e| Error::io("renaming onto", to, e.into()))
}

/// Hard-links `from` to the new name `to`; where they are on different file systems, copies
/// it instead (same mode and owner, fsynced). Returns whether a link was made.
pub(crate) fn link_or_copy(from: &Path, to: &Path) -> Result<bool> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let meta = fs::symlink_metadata(from).map_err(|e| Error::io("reading", from, e))?;
            let bytes = read_nofollow(from).map_err(|e| Error::io("reading", from, e))?;
            use std::os::unix::fs::MetadataExt;
            let perm = Perm {
                mode: meta.mode() & 0o7777,
                owner: Some(meta.uid()),
                group: Some(meta.gid()),
            };
            create_file(to, &bytes, perm)?;
            Ok(false)
        }
        Err(e) => Err(Error::io("linking", to, e)),
    }
}

/// Removes a file, link or directory tree at `path` without following symlinks; a missing
/// path is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("removing", path, e)),
        _ => Ok(()),
    }
}

/// A suffix for temporary names, unique among the processes alive now: pid, a counter and
/// the clock, in lowercase hex digits and dashes only (recovery recognises names by it).
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}-{n:x}-{nanos:x}", std::process::id())
}

/// Whether `s` is a suffix made by [`unique_suffix`] (or by an older run of it).
pub(crate) fn is_unique_suffix(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
}

/// The directory part of `path` (`.` for a bare name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn nofollow() -> i32 {
    // The flag's bit pattern fits an i32; `custom_flags` takes the C int that open(2) takes.
    (OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn create_file_sets_mode_despite_umask_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        create_file(
            &path,
            b"secret",
            Perm {
                mode: 0o640,
                owner: None,
                group: None,
            },
        )
        .expect("create");
        assert_eq!(fs::read(&path).expect("read"), b"secret");
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o7777, 0o640);
    }

    #[test]
    fn create_file_refuses_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("write victim");
        let path = dir.path().join(".certkeeper-www.gen-000002");
        std::os::unix::fs::symlink(&victim, &path).expect("plant");
        let err = create_file(&path, b"evil", Perm::PRIVATE).expect_err("must refuse");
        assert!(matches!(err, Error::Planted { .. }), "{err}");
        assert_eq!(fs::read(&victim).expect("read victim"), b"precious");
        // A dangling symlink is refused the same way.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("plant");
        let err = create_file(&dangling, b"evil", Perm::PRIVATE).expect_err("must refuse");
        assert!(matches!(err, Error::Planted { .. }), "{err}");
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn create_dir_and_rename_noreplace_refuse_planted_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        fs::create_dir(&target).expect("mkdir");
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).expect("plant");
        assert!(matches!(
            create_dir(&planted, 0o700),
            Err(Error::Planted { .. })
        ));
        let from = dir.path().join("from");
        fs::create_dir(&from).expect("mkdir");
        assert!(matches!(
            rename_noreplace(&from, &planted),
            Err(Error::Planted { .. })
        ));
        assert!(from.is_dir());
        assert_eq!(fs::read_dir(&target).expect("list").count(), 0);
    }

    #[test]
    fn replace_file_replaces_whole_and_removes_planted_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        for content in [b"one", b"two"] {
            replace_file(dir.path(), "a.json", content, Perm::PRIVATE, true).expect("replace");
        }
        assert_eq!(fs::read(dir.path().join("a.json")).expect("read"), b"two");
        let mode = fs::metadata(dir.path().join("a.json"))
            .expect("meta")
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A link planted where the temporary file goes is removed, not written through.
        let victim = dir.path().join("victim");
        fs::write(&victim, b"untouched").expect("write victim");
        std::os::unix::fs::symlink(&victim, dir.path().join(".certkeeper-tmp-a.json"))
            .expect("plant");
        replace_file(dir.path(), "a.json", b"three", Perm::PRIVATE, false).expect("replace");
        assert_eq!(fs::read(&victim).expect("read victim"), b"untouched");
        assert_eq!(fs::read(dir.path().join("a.json")).expect("read"), b"three");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 2);
    }

    #[test]
    fn read_nofollow_refuses_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), b"x").expect("write");
        std::os::unix::fs::symlink("f", dir.path().join("l")).expect("link");
        assert!(read_nofollow(&dir.path().join("f")).is_ok());
        assert!(read_nofollow(&dir.path().join("l")).is_err());
    }

    #[test]
    fn replace_symlink_swaps_the_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("live");
        let tmp = dir.path().join("tmp");
        replace_symlink(Path::new("a"), &tmp, &link).expect("first");
        replace_symlink(Path::new("b"), &tmp, &link).expect("second");
        assert_eq!(fs::read_link(&link).expect("readlink"), Path::new("b"));
        assert!(!tmp.exists());
    }

    #[test]
    fn unique_suffixes_are_recognised() {
        let a = unique_suffix();
        assert!(is_unique_suffix(&a), "{a}");
        assert_ne!(a, unique_suffix());
        assert!(!is_unique_suffix("x.live"));
        assert!(!is_unique_suffix(""));
    }
}
