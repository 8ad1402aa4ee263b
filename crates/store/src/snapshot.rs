//! Snapshots: earlier live pairs kept under `state_dir/snapshots/<name>/<id>/`.
//!
//! A snapshot holds `fullchain.pem`, `privkey.pem` and the files derived from them
//! (`cert.pem`, `chain.pem`, `combined.pem`, when the generation had them) as hard links to the files of the
//! generation it was taken from (no data copied) or, where `state_dir` is on another file
//! system, as fsynced copies; and `snapshot.json`, a [`SnapshotRecord`] with the pair's
//! [`Manifest`]. It is built under `.tmp-<id>-<hex>` and renamed to `<id>` in one step, so
//! a snapshot is either complete or absent; recovery removes `.tmp-*` leftovers. Ids are
//! decimal sequence numbers, zero-padded to six digits; a higher id is a newer snapshot.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::atomic::{self, Perm};
use super::error::{Error, Result};
use super::manifest::{FileDigests, Manifest};

/// The record file inside a snapshot directory.
const RECORD_FILE: &str = "snapshot.json";

/// Snapshot directories are private to `state_dir`'s owner.
const SNAPSHOT_DIR_MODE: u32 = 0o700;

/// What `snapshot.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRecord {
    /// When the snapshot was taken (RFC 3339).
    pub created: String,
    /// Whether the files are hard links (false: copies, another file system).
    pub linked: bool,
    /// The pair as it was live.
    pub manifest: Manifest,
    /// Set when the pair was not what certkeeper had written (a live file edited in place):
    /// why. Such a snapshot is listed as not verified and is never a default rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
}

/// One snapshot as `snapshots --json` prints it: newest first, one object each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The snapshot's id, as `rollback --to` takes it.
    pub id: String,
    /// When the snapshot was taken (RFC 3339); `None` when its record is unreadable.
    pub created: Option<String>,
    /// The leaf's notAfter (RFC 3339).
    pub not_after: Option<String>,
    /// SHA-256 of the leaf's DER, hex.
    pub fingerprint: Option<String>,
    /// SHA-256 of each file as recorded when the snapshot was taken.
    pub files: Option<FileDigests>,
    /// True for hard links, false for copies.
    pub linked: bool,
    /// Whether both files exist and still have the recorded SHA-256, and the pair is one
    /// certkeeper wrote (not live files edited in place).
    pub verified: bool,
    /// Whether both files exist and still have the recorded SHA-256 (not part of the JSON
    /// shape): an intact snapshot that is not verified may still be restored by its id.
    #[serde(skip)]
    pub intact: bool,
    /// Why the snapshot does not verify (not part of the JSON shape).
    #[serde(skip)]
    pub problem: Option<String>,
}

/// The snapshots of one certificate.
#[derive(Clone, Debug)]
pub(crate) struct Snapshots {
    pub dir: PathBuf,
}

impl Snapshots {
    /// The snapshots kept in `dir` (`state_dir/snapshots/<name>`).
    pub fn new(dir: PathBuf) -> Snapshots {
        Snapshots { dir }
    }

    /// The directory of snapshot `id`; an id that is not one (`..`, a path) names a
    /// directory that cannot exist (`snapshots/<name>/.invalid-id`), never one elsewhere.
    pub fn path(&self, id: &str) -> PathBuf {
        if is_id(id) {
            self.dir.join(id)
        } else {
            self.dir.join(".invalid-id")
        }
    }

    /// All snapshots, newest first, each verified against its record.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(self
            .ids()?
            .into_iter()
            .rev()
            .map(|(_, id)| self.inspect(&id))
            .collect())
    }

    /// Reads a snapshot's record (not following symlinks).
    pub fn record(&self, id: &str) -> Result<SnapshotRecord> {
        atomic::read_json_nofollow(&self.path(id).join(RECORD_FILE))
    }

    pub fn inspect(&self, id: &str) -> SnapshotInfo {
        let mut info = SnapshotInfo {
            id: id.to_owned(),
            created: None,
            not_after: None,
            fingerprint: None,
            files: None,
            linked: false,
            verified: false,
            intact: false,
            problem: None,
        };
        let dir = self.path(id);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            info.problem = Some(format!("{} is not a directory", dir.display()));
            return info;
        }
        let record = match self.record(id) {
            Ok(r) => r,
            Err(e) => {
                info.problem = Some(e.to_string());
                return info;
            }
        };
        info.problem = verify_files(&dir, &record.manifest.files)
            .err()
            .map(|e| e.to_string());
        info.intact = info.problem.is_none();
        if info.intact {
            info.problem = record.unverified.clone();
        }
        info.verified = info.problem.is_none();
        info.created = Some(record.created);
        info.not_after = Some(record.manifest.not_after);
        info.fingerprint = Some(record.manifest.fingerprint);
        info.files = Some(record.manifest.files);
        info.linked = record.linked;
        info
    }

    /// The snapshot directory's entries; `None` when there is no such directory of ours.
    fn listing(&self) -> Result<Option<fs::ReadDir>> {
        if !atomic::own_dir(&self.dir)? {
            return Ok(None);
        }
        match fs::read_dir(&self.dir) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("listing", &self.dir, e)),
        }
    }

    /// Snapshot ids present, ascending by number.
    fn ids(&self) -> Result<Vec<(u64, String)>> {
        let Some(read) = self.listing()? else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| Error::io("listing", &self.dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Some(n) = parse_id(name) {
                    ids.push((n, name.to_owned()));
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Keeps the pair in `generation_dir` (described by `manifest`) as a new snapshot.
    /// Returns the snapshot and whether it was newly made: when the newest snapshot already
    /// holds exactly this pair and verifies, it is returned instead of taking another, so
    /// that repeated interrupted swaps do not push older history out. `unverified` marks a
    /// pair that is not what certkeeper wrote, with the reason.
    pub fn take(
        &self,
        generation_dir: &Path,
        manifest: &Manifest,
        unverified: Option<String>,
    ) -> Result<(SnapshotInfo, bool)> {
        atomic::ensure_dir(&self.dir, SNAPSHOT_DIR_MODE)?;
        let ids = self.ids()?;
        if let Some((_, newest)) = ids.last() {
            let info = self.inspect(newest);
            if info.verified && info.files.as_ref() == Some(&manifest.files) {
                return Ok((info, false));
            }
        }
        let id = format!("{:06}", ids.last().map_or(0, |(n, _)| *n) + 1);
        let tmp = self
            .dir
            .join(format!(".tmp-{id}-{}", atomic::unique_suffix()));
        atomic::create_dir(&tmp, SNAPSHOT_DIR_MODE)?;
        let result = (|| {
            let mut linked = true;
            for (file, digest) in manifest.files.entries() {
                linked &= atomic::link_or_copy(&generation_dir.join(file), &tmp.join(file))?;
                atomic::check_digest(&tmp.join(file), digest)?;
            }
            let record = SnapshotRecord {
                created: certkeeper_base::text::rfc3339(OffsetDateTime::now_utc()),
                linked,
                manifest: manifest.clone(),
                unverified,
            };
            let path = tmp.join(RECORD_FILE);
            let json = serde_json::to_vec_pretty(&record)
                .map_err(|e| Error::io("encoding", &path, io::Error::other(e)))?;
            atomic::create_file(&path, &json, Perm::PRIVATE)?;
            atomic::sync_dir(&tmp)?;
            let final_path = self.path(&id);
            atomic::rename_noreplace(&tmp, &final_path)?;
            atomic::sync_dir(&self.dir)
        })();
        if let Err(e) = result {
            let _ = atomic::remove_tree(&tmp);
            return Err(e);
        }
        Ok((self.inspect(&id), true))
    }

    /// Removes one snapshot: renamed out of the way first, so that a crash never leaves a
    /// half-removed snapshot under its id.
    pub fn remove(&self, id: &str) -> Result<()> {
        // A snapshot is a directory; a node someone put under its name is not removed.
        Error::unless_dir(&self.path(id), false)?;
        let tmp = self
            .dir
            .join(format!(".tmp-{id}-{}", atomic::unique_suffix()));
        atomic::rename_noreplace(&self.path(id), &tmp)?;
        // No fsync: if a crash undoes the rename the snapshot is whole again, and if it
        // keeps it, recovery removes the `.tmp-` name.
        atomic::remove_tree(&tmp)
    }

    /// Removes the oldest snapshots beyond `keep`; returns their ids.
    pub fn prune(&self, keep: usize) -> Result<Vec<String>> {
        let ids = self.ids()?;
        let excess = ids.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for (_, id) in ids.into_iter().take(excess) {
            self.remove(&id)?;
            removed.push(id);
        }
        Ok(removed)
    }

    /// Removes leftovers of interrupted snapshot work; returns what was removed.
    pub fn remove_leftovers(&self) -> Result<Vec<PathBuf>> {
        let Some(read) = self.listing()? else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| Error::io("listing", &self.dir, e))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(".tmp-"))
            {
                atomic::remove_tree(&entry.path())?;
                removed.push(entry.path());
            }
        }
        if !removed.is_empty() {
            atomic::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// Why a file of a snapshot does not match its record.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read (missing, a link, too large).
    #[error("{file}: {source}")]
    Unreadable {
        /// The file's name in the snapshot.
        file: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file's digest is not the recorded one.
    #[error("{file} has sha256 {actual}, recorded {expected}")]
    Digest {
        /// The file's name in the snapshot.
        file: &'static str,
        /// Its digest now.
        actual: String,
        /// The digest recorded.
        expected: String,
    },
}

/// Checks every file of a snapshot against its recorded digest.
fn verify_files(dir: &Path, files: &FileDigests) -> std::result::Result<(), FileError> {
    for (file, expected) in files.entries() {
        let bytes = atomic::read_nofollow(&dir.join(file))
            .map_err(|source| FileError::Unreadable { file, source })?;
        let actual = certkeeper_base::text::sha256_hex(&bytes);
        if &actual != expected {
            return Err(FileError::Digest {
                file,
                actual,
                expected: expected.clone(),
            });
        }
    }
    Ok(())
}

/// Whether `id` is a snapshot id (decimal digits): the only names joined to a snapshot
/// directory.
pub(crate) fn is_id(id: &str) -> bool {
    parse_id(id).is_some()
}

fn parse_id(name: &str) -> Option<u64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_numbers() {
        assert_eq!(parse_id("000012"), Some(12));
        assert_eq!(parse_id("1234567"), Some(1_234_567));
        assert_eq!(parse_id(".tmp-000012-1-2"), None);
        assert_eq!(parse_id("+12"), None);
        assert_eq!(parse_id(""), None);
    }

    #[test]
    fn info_serializes_to_the_documented_shape() {
        let info = SnapshotInfo {
            id: "000003".into(),
            created: Some("2026-01-02T03:04:05Z".into()),
            not_after: Some("2026-04-02T03:04:05Z".into()),
            fingerprint: Some("ab".into()),
            files: Some(FileDigests {
                fullchain: "cd".into(),
                privkey: "ef".into(),
                cert: None,
                chain: None,
                combined: None,
            }),
            linked: true,
            verified: false,
            intact: false,
            problem: Some("privkey.pem differs".into()),
        };
        let json = serde_json::to_value(&info).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "id": "000003",
                "created": "2026-01-02T03:04:05Z",
                "not_after": "2026-04-02T03:04:05Z",
                "fingerprint": "ab",
                "files": {"fullchain": "cd", "privkey": "ef"},
                "linked": true,
                "verified": false
            })
        );
    }
}
