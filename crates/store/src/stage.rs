//! Staged swaps: a new pair is switched in, but the pair it replaced is kept until the caller
//! commits (the service serves the new pair) or reverts (it does not).
//!
//! Between the switch and the decision, `state_dir/journal/<name>.json` records which
//! generation was staged, which one it replaced (with the SHA-256 of its files as they really
//! were) and the snapshot taken of it. The journal is written, fsynced, before `.live` moves,
//! and its removal is the commit point. A crash before that point is undone by the next
//! recovery: an uncommitted pair was never verified, so the previous pair comes back and the
//! issued material, kept elsewhere, is tried again by the next pass. A rejected pair being
//! reverted is therefore never what a recovery leaves live.
//!
//! A revert puts `.live` back on the previous generation. When that generation is gone or was
//! changed since, the pair comes back from the snapshot taken at staging (hard links to the
//! same files); when neither is usable the revert is impossible, and the staged pair stays
//! live as the only whole pair there is ([`Error::RevertImpossible`]).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{self, Perm};
use super::error::{Error, Result};
use super::live::{Layout, PRIVKEY_FILE};
use super::manifest::FileDigests;
use super::snapshot::Snapshots;

/// The journal format version written.
const JOURNAL_VERSION: u32 = 1;

/// What an uncommitted stage left to undo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    pub version: u32,
    /// The certificate's name.
    pub certificate: String,
    /// The generation switched in and not yet committed.
    pub staged: u64,
    /// The generation it replaced; `None` when nothing whole was live.
    pub previous: Option<u64>,
    /// SHA-256 of the replaced generation's files as they were (edits included).
    pub previous_files: Option<FileDigests>,
    /// The snapshot taken of the replaced pair.
    pub snapshot: Option<String>,
    /// Whether that snapshot was taken by this stage (a revert then removes it again).
    pub snapshot_new: bool,
}

impl Journal {
    pub fn new(name: &str, staged: u64) -> Journal {
        Journal {
            version: JOURNAL_VERSION,
            certificate: name.to_owned(),
            staged,
            previous: None,
            previous_files: None,
            snapshot: None,
            snapshot_new: false,
        }
    }
}

/// The journals of a state directory, one file per certificate with a stage in flight.
#[derive(Clone, Debug)]
pub(crate) struct Journals {
    dir: PathBuf,
}

impl Journals {
    /// The journals kept in `dir` (`state_dir/journal`).
    pub fn new(dir: PathBuf) -> Journals {
        Journals { dir }
    }

    fn file(name: &str) -> String {
        format!("{name}.json")
    }

    /// Whether no stage is in flight (no journal at all; a journal moved aside is none).
    pub fn is_empty(&self) -> bool {
        match fs::read_dir(&self.dir) {
            Ok(mut entries) => !entries
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// The journal of `name`, if a stage of it is in flight. A journal is data: one that
    /// cannot be read, or that names another certificate or a snapshot id that is not one,
    /// is moved aside (`<name>.json.rejected`, which no command reads) and
    /// [`Error::Tampered`] says so; nothing it says is done.
    pub fn read(&self, name: &str) -> Result<Option<Journal>> {
        atomic::own_dir(&self.dir)?;
        let path = self.dir.join(Self::file(name));
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &path, e)),
            Ok(_) => {}
        }
        let problem = match atomic::read_json_nofollow::<Journal>(&path) {
            Err(e) => format!("cannot be used ({e})"),
            Ok(j) if j.version != JOURNAL_VERSION => {
                format!("has version {}, not {JOURNAL_VERSION}", j.version)
            }
            Ok(j) if j.certificate != name => {
                format!(
                    "names certificate \"{}\", not \"{name}\"",
                    certkeeper_base::text::escape_line(&j.certificate)
                )
            }
            Ok(Journal {
                snapshot: Some(id), ..
            }) if !super::snapshot::is_id(&id) => {
                format!(
                    "names snapshot \"{}\", which is not a snapshot id",
                    certkeeper_base::text::escape_line(&id)
                )
            }
            Ok(j) => return Ok(Some(j)),
        };
        let aside = self.dir.join(format!("{}.rejected", Self::file(name)));
        fs::rename(&path, &aside).map_err(|e| Error::io("moving aside", &path, e))?;
        atomic::sync_dir(&self.dir)?;
        Err(Error::Tampered {
            path,
            problem,
            aside,
        })
    }

    /// Writes the journal durably (file and directory entry) before anything it describes
    /// happens.
    pub fn write(&self, journal: &Journal) -> Result<()> {
        atomic::ensure_dir(&self.dir, JOURNAL_DIR_MODE)?;
        let name = Self::file(&journal.certificate);
        let path = self.dir.join(&name);
        let bytes = serde_json::to_vec_pretty(journal)
            .map_err(|e| Error::io("encoding", &path, io::Error::other(e)))?;
        atomic::replace_file(&self.dir, &name, &bytes, Perm::PRIVATE, true)
    }

    /// Removes the journal durably: for a stage, this is the commit.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.dir.join(Self::file(name));
        match fs::remove_file(&path) {
            Ok(()) => atomic::sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }

    /// Removes the temporary file an interrupted [`Journals::write`] may have left.
    pub fn remove_leftover(&self, name: &str) -> Result<Option<PathBuf>> {
        let path = self
            .dir
            .join(format!("{}{}", atomic::TMP_PREFIX, Self::file(name)));
        match fs::symlink_metadata(&path) {
            Ok(_) => {
                atomic::remove_tree(&path)?;
                Ok(Some(path))
            }
            Err(_) => Ok(None),
        }
    }
}

/// What a revert did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reverted {
    /// Whether a pair is live again (`false`: nothing was live before the stage, and the
    /// live paths are gone again).
    pub restored: bool,
    /// Set when the previous generation was gone or changed and the pair came back from
    /// this snapshot instead.
    pub from_snapshot: Option<String>,
}

/// Puts the pair a stage replaced back as the live pair, drops the staged generation and the
/// snapshot the stage took, and removes the journal. On [`Error::RevertImpossible`] nothing
/// was changed and the journal is kept; the caller decides.
pub(crate) fn revert(
    layout: &Layout,
    snaps: &Snapshots,
    journals: &Journals,
    j: &Journal,
) -> Result<Reverted> {
    let mut from_snapshot = None;
    let restored = match (j.previous, &j.previous_files) {
        (None, _) => {
            // Nothing was live before: take the pair away again.
            atomic::remove_tree(&layout.live_link())?;
            atomic::sync_dir(&layout.dir)?;
            for (path, target) in layout.links() {
                if fs::read_link(&path).is_ok_and(|t| t == target) {
                    atomic::remove_tree(&path)?;
                    atomic::sync_dir(atomic::parent(&path))?;
                }
            }
            false
        }
        (Some(_), None) => {
            return Err(impossible(
                layout,
                "the journal does not record the previous pair's files",
            ));
        }
        (Some(g), Some(files)) => {
            let dir = layout.generation_dir(g);
            if generation_matches(&dir, files) {
                layout.commit(g, false)?;
            } else {
                let id = usable_snapshot(snaps, j.snapshot.as_deref(), files).ok_or_else(|| {
                    impossible(
                        layout,
                        &format!(
                            "its generation {} is gone or was changed, and no intact snapshot of it is left",
                            dir.display()
                        ),
                    )
                })?;
                let record = snaps.record(&id)?;
                let source = snaps.path(&id);
                let perm = perm_of(&source.join(PRIVKEY_FILE))?;
                let m = layout.next_generation()?;
                layout.link_generation(m, &source, &record.manifest, perm)?;
                layout.commit(m, false)?;
                from_snapshot = Some(id);
            }
            layout.read_back(files)?;
            true
        }
    };
    if layout.live_generation()? != Some(j.staged) {
        atomic::remove_tree(&layout.generation_dir(j.staged))?;
        atomic::sync_dir(&layout.dir)?;
    }
    if let Some(id) = &j.snapshot
        && j.snapshot_new
        && from_snapshot.is_none()
        && fs::symlink_metadata(snaps.path(id)).is_ok()
    {
        // The pair it holds is live again; the next stage takes it again if needed. (A
        // revert interrupted after this point finds it gone already.)
        snaps.remove(id)?;
    }
    // The file is named after the layout's certificate, never after a name read from it.
    journals.remove(&layout.name)?;
    Ok(Reverted {
        restored,
        from_snapshot,
    })
}

/// Whether a generation directory still holds exactly these files (derived ones included).
fn generation_matches(dir: &Path, files: &FileDigests) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
        && FileDigests::read_dir(dir).is_ok_and(|now| &now == files)
}

/// The id of the stage's snapshot when it still holds exactly `files`.
fn usable_snapshot(snaps: &Snapshots, id: Option<&str>, files: &FileDigests) -> Option<String> {
    let id = id?;
    let info = snaps.inspect(id);
    (info.intact && info.files.as_ref() == Some(files)).then(|| id.to_owned())
}

fn perm_of(path: &Path) -> Result<Perm> {
    let m = fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    Ok(Perm {
        mode: m.mode() & 0o777,
        owner: Some(m.uid()),
        group: Some(m.gid()),
    })
}

fn impossible(layout: &Layout, reason: &str) -> Error {
    Error::RevertImpossible {
        name: layout.name.clone(),
        reason: reason.to_owned(),
    }
}

/// The journal directory is private to `state_dir`'s owner.
const JOURNAL_DIR_MODE: u32 = 0o700;
