//! `certkeeper fleet …`: the fleet's own commands. `fleet keygen` writes a new seal key, the
//! key every host of a fleet shares to seal and open the private keys kept in etcd.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::SEAL_KEY_LEN;

/// Exit code when the key could not (or would not) be written.
const WRITE_FAILED: u8 = 1;
/// Exit code of a usage or config error.
const USAGE: u8 = 2;

/// Runs `fleet keygen`: 32 random bytes to `out`, or to the config's `fleet.seal_key_file`.
pub fn keygen(config_path: &Path, out: Option<&Path>, force: bool) -> u8 {
    let target = match out {
        Some(p) => p.to_owned(),
        None => {
            let Ok(config) = super::load_config(config_path) else {
                return USAGE;
            };
            match config.fleet {
                Some(fleet) => fleet.seal_key_file,
                None => {
                    eprintln!(
                        "certkeeper: {}: there is no fleet section, so no seal_key_file to write; add the fleet section or pass --out PATH",
                        crate::text::escape_line(&config_path.display().to_string())
                    );
                    return USAGE;
                }
            }
        }
    };
    let shown = crate::text::escape_line(&target.display().to_string());
    let key = match crate::fleet::seal::generate_key() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("certkeeper: cannot make a seal key: {e}");
            return WRITE_FAILED;
        }
    };
    if let Err(e) = write_key(&target, &key[..], force) {
        eprintln!("certkeeper: {}", crate::text::escape_line(&e.to_string()));
        // A path that names no file is a usage error; anything else was a refused write.
        return match e {
            WriteError::NoName { .. } => USAGE,
            _ => WRITE_FAILED,
        };
    }
    let done = format!(
        "wrote a new seal key ({SEAL_KEY_LEN} bytes, mode 0600) to {shown}\n\
         copy this same file to every host of the fleet over a secure channel (scp, a secret store), keep it mode 0600, and never paste it into chat, tickets or mail\n"
    );
    if !super::print(&done) {
        return WRITE_FAILED;
    }
    0
}

/// Why the key was not written. Nothing is left behind on error.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(
        "refusing to write {}: it is a symbolic link, and certkeeper never writes a key through one; remove the link or choose another path",
        path.display()
    )]
    Link { path: PathBuf },
    #[error(
        "refusing to write {}: {what} is there, not a regular file; move it away or choose another path",
        path.display()
    )]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "{} already exists; replacing a fleet's seal key makes every host without the new one unable to deploy: pass --force to replace it",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error("{} is not a file path; name the file to write", path.display())]
    NoName { path: PathBuf },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Writes `bytes` to `target`, mode 0600, atomically: a temporary file created exclusively
/// beside it (never through a link), fsynced, renamed onto the target (refusing to replace
/// anything unless `force`), and the directory fsynced. A symbolic link at the target is
/// refused even with `force`.
fn write_key(target: &Path, bytes: &[u8], force: bool) -> Result<(), WriteError> {
    let Some(name) = target.file_name() else {
        return Err(WriteError::NoName {
            path: target.to_owned(),
        });
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |op, path: &Path| {
        let path = path.to_owned();
        move |source| WriteError::Io { op, path, source }
    };
    match fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(WriteError::Link {
                path: target.to_owned(),
            });
        }
        Ok(m) if !m.file_type().is_file() => {
            return Err(WriteError::NotAFile {
                path: target.to_owned(),
                what: crate::fsutil::kind_name(m.file_type()),
            });
        }
        Ok(_) if !force => {
            return Err(WriteError::Exists {
                path: target.to_owned(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("look at", target)(e)),
    }
    let mut tmp_name = std::ffi::OsString::from(".certkeeper-tmp-");
    tmp_name.push(name);
    tmp_name.push(format!(".{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)
            .map_err(io("write", target))?;
        // The mode given to open() was reduced by the umask; 0600 is meant whatever it is.
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(io("change the mode of", target))?;
        file.write_all(bytes).map_err(io("write", target))?;
        file.sync_all().map_err(io("sync", target))?;
        if force {
            // A rename replaces whatever name is there (a link planted meanwhile included)
            // and never writes through it.
            fs::rename(&tmp, target).map_err(io("rename onto", target))
        } else {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &tmp,
                rustix::fs::CWD,
                target,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| match e {
                rustix::io::Errno::EXIST => WriteError::Exists {
                    path: target.to_owned(),
                },
                e => io("rename onto", target)(e.into()),
            })
        }
    })();
    if let Err(e) = written {
        // Leave nothing behind; the first error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory", dir))
}
