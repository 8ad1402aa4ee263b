//! Ownership and permissions of what certkeeper trusts: its config names the commands it
//! runs (as root, typically), its secret files and the local CA's key are credentials, and
//! `state_dir` holds both. A config or secret file that group or others can write is
//! refused; one that others can read, or that another user owns, is worth one warning per
//! run; a `state_dir` that another user owns is never silently re-moded.

use std::collections::HashSet;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{LazyLock, Mutex, PoisonError};

/// Whether group or others may write the file.
pub fn writable_by_others(meta: &Metadata) -> bool {
    meta.mode() & 0o022 != 0
}

/// Whether group or others may read the file.
pub fn readable_by_others(meta: &Metadata) -> bool {
    meta.mode() & 0o044 != 0
}

/// Whether the file belongs to a user that is neither this one nor root.
pub fn foreign_owner(meta: &Metadata) -> bool {
    let me = rustix::process::geteuid().as_raw();
    meta.uid() != me && meta.uid() != 0
}

/// The mode as `0644`.
pub fn mode(meta: &Metadata) -> String {
    format!("{:04o}", meta.mode() & 0o7777)
}

/// Logs `message` as a warning once per run for `path`.
pub fn warn_once(path: &Path, message: &str) {
    static WARNED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);
    let key = format!("{}\0{message}", path.display());
    // Inserts are whole, so a poisoned lock is still consistent.
    if WARNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key)
    {
        tracing::warn!(path = %path.display(), "{message}");
    }
}

/// Checks a file certkeeper trusts (`what`: "config file", "secret file"): `Err` when group
/// or others can write it; a warning when another user owns it or, with `private`, when
/// group or others can read it.
pub fn check_trusted_file(path: &Path, what: &str, private: bool) -> Result<(), String> {
    // What is not a regular file is refused by the read, which says what it is.
    let Some(meta) = std::fs::metadata(path).ok().filter(|m| m.is_file()) else {
        return Ok(());
    };
    if writable_by_others(&meta) {
        return Err(format!(
            "{what} {} is writable by group or others (mode {}); whoever can write it controls what certkeeper does: chmod go-w {}",
            path.display(),
            mode(&meta),
            path.display()
        ));
    }
    if foreign_owner(&meta) {
        warn_once(
            path,
            &format!(
                "{what} is owned by uid {}, neither this user nor root; that user controls what certkeeper does",
                meta.uid()
            ),
        );
    }
    if private && readable_by_others(&meta) {
        warn_once(
            path,
            &format!(
                "{what} is readable by group or others (mode {}): chmod 600",
                mode(&meta)
            ),
        );
    }
    Ok(())
}
