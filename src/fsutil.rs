//! Small file-writing helpers for certkeeper's own state (accounts, local CA, retry records,
//! kept material): a file replaced whole through a fsynced temporary file and one rename,
//! never following a symlink planted at the temporary path. The live certificate pairs have
//! their own, stricter machinery in `crate::store`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `path` (it must not exist; a symlink there is refused), writes `bytes` with
/// `mode`, and fsyncs it.
pub fn create_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `dir/name` with `bytes` (mode `mode`): written to `.certkeeper-tmp-<name>` in the
/// same directory, fsynced, renamed over the target, directory fsynced. On error the
/// temporary file is removed and the old file is intact.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = dir.join(format!(".certkeeper-tmp-{name}"));
    // A leftover of a crash is ours to remove (remove_file never follows a link).
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = create_synced(&tmp, bytes, mode)
        .and_then(|_| fs::rename(&tmp, dir.join(name)))
        .and_then(|_| sync_dir(dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_refuses_planted_links() {
        let dir = tempfile::tempdir().unwrap();
        replace_file(dir.path(), "a.json", b"one", 0o600).unwrap();
        replace_file(dir.path(), "a.json", b"two", 0o600).unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("a.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A link planted where the temporary file goes is removed, not written through.
        let victim = dir.path().join("victim");
        fs::write(&victim, b"untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".certkeeper-tmp-a.json")).unwrap();
        replace_file(dir.path(), "a.json", b"three", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"three");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        // A link at a path created with create_synced is refused.
        std::os::unix::fs::symlink(&victim, dir.path().join("new")).unwrap();
        assert!(create_synced(&dir.path().join("new"), b"x", 0o600).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    }
}
