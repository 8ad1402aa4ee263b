//! Whether a configured program (a reload or health command, an exec DNS hook) can be run,
//! found as the runtime finds it, without running it: a bare name on `PATH`, a path as
//! written. Only looked at (`stat`, `access(X_OK)`), never opened or executed.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, access};

/// Checks that `program` names a regular file this user may execute. `relative_ok`: a
/// relative path with a `/` is taken as it is (exec hooks are made absolute by validation
/// already); otherwise it is refused, since it would depend on the working directory.
pub fn check(program: &str, relative_ok: bool) -> Result<(), String> {
    if program.contains('/') {
        let path = Path::new(program);
        if !path.is_absolute() && !relative_ok {
            return Err(format!(
                "{program} is a relative path, found from the working directory of each run (/ under systemd); write the absolute path"
            ));
        }
        return executable(path);
    }
    // As execvp does: each directory of PATH in turn; the first executable file wins.
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let mut first_err = None;
    for dir in std::env::split_paths(&path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match std::fs::metadata(&candidate) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            _ => match executable(&candidate) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            },
        }
    }
    Err(first_err.unwrap_or_else(|| {
        format!("program {program} is not found in any directory of PATH; install it or write its absolute path")
    }))
}

/// A regular file (symbolic links followed) with an execute bit for this user.
fn executable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                "is a loop of symbolic links".to_owned()
            }
            Some(code) if code == rustix::io::Errno::NOTDIR.raw_os_error() => {
                "does not exist (a part of its path is not a directory)".to_owned()
            }
            _ => match e.kind() {
                io::ErrorKind::NotFound => "does not exist".to_owned(),
                io::ErrorKind::PermissionDenied => {
                    "cannot be reached by this user (permission denied on a directory)".to_owned()
                }
                _ => format!("cannot be looked at: {e}"),
            },
        };
        format!("{shown} {why}; fix the path or install the program")
    })?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(format!("{shown} is {what}, not a program"));
    }
    access(path, Access::EXEC_OK)
        .map_err(|_| format!("{shown} is not executable by this user; chmod +x it or fix the path"))
}
