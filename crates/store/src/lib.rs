//! The on-disk store: live pairs, their manifests, snapshots and the state_dir lock.
//!
//! Everything that writes under a certificate's live paths or under `state_dir` lives here.
//! `check` and `verify` only read through [`manifest::read_live`]. How a swap stays atomic
//! and what a reader may rely on is told in the README (the store section); in short, each pair is written into
//! a new immutable generation directory beside the live files, and one `rename(2)` of a
//! `.live` symlink, through which the live paths resolve, switches both files at once.
//!
//! ```no_run
//! # fn main() -> Result<(), certkeeper_store::Error> {
//! use certkeeper_store::{PairSpec, Store};
//!
//! let store = Store::open("/var/lib/certkeeper")?;
//! let spec = PairSpec::new("www", "/etc/tls/www/fullchain.pem", "/etc/tls/www/privkey.pem");
//! let locked = store.lock()?; // one writer per state_dir
//! locked.recover(&spec)?; // first thing in every command that writes
//! # let (chain, key) = (Vec::new(), Vec::new());
//! let deployed = locked.deploy(&spec, &chain, &key)?;
//! // ... reload and verify the service; on failure:
//! let restored = locked.rollback(&spec, None)?;
//! # let _ = (deployed, restored);
//! # Ok(()) }
//! ```

pub mod atomic;
mod derived;
pub mod error;
mod live;
mod lock;
pub mod manifest;
mod reader;
mod recovery;
mod rollback;
pub mod snapshot;
mod stage;
mod state_dir;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

pub use derived::Derived;
pub use error::{Error, Result};
pub use lock::LOCK_FILE;
pub use manifest::Manifest;
pub use reader::{LivePair, read_live_files, read_live_pair};
pub use recovery::Recovered;
pub use snapshot::SnapshotInfo;
pub use stage::Reverted;
pub use state_dir::{Durable, STATE_DIR_MODE, StateDir};

use atomic::Perm;
use live::{Layout, Live};
use snapshot::Snapshots;
use stage::Journals;

/// Mode of a private key unless the spec says otherwise.
pub const DEFAULT_KEY_MODE: u32 = 0o600;
/// Mode of a fullchain file.
pub const FULLCHAIN_MODE: u32 = 0o644;
/// Snapshots kept per certificate unless the spec says otherwise.
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 5;

/// One certificate's live pair and how to write it: what the store needs from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PairSpec {
    /// The certificate's name, `[a-z0-9][a-z0-9._-]*`; it is part of file names.
    pub name: String,
    /// Absolute path of the live fullchain.
    pub fullchain: PathBuf,
    /// Absolute path of the live private key.
    pub privkey: PathBuf,
    /// Mode of the private key; `None` keeps the live key's mode (adopted files keep
    /// theirs), and a first deploy gets [`DEFAULT_KEY_MODE`].
    pub mode: Option<u32>,
    /// Owner of the private key; `None` keeps the live key's owner (the process's user
    /// for a first deploy).
    pub owner: Option<u32>,
    /// Group of the private key; `None` keeps the live key's group.
    pub group: Option<u32>,
    /// Snapshots kept ([`DEFAULT_KEEP_SNAPSHOTS`] unless set); older ones are pruned.
    pub keep_snapshots: usize,
    /// Absolute path of a live file holding the leaf alone, if wanted.
    pub cert: Option<PathBuf>,
    /// Absolute path of a live file holding the intermediates alone, if wanted.
    pub chain: Option<PathBuf>,
    /// Absolute path of a live file holding the fullchain then the key, if wanted; it has
    /// the key's mode, owner and group.
    pub combined: Option<PathBuf>,
}

impl PairSpec {
    /// A spec with the default mode, ownership and number of snapshots.
    pub fn new(
        name: impl Into<String>,
        fullchain: impl Into<PathBuf>,
        privkey: impl Into<PathBuf>,
    ) -> Self {
        PairSpec {
            name: name.into(),
            fullchain: fullchain.into(),
            privkey: privkey.into(),
            mode: None,
            owner: None,
            group: None,
            keep_snapshots: DEFAULT_KEEP_SNAPSHOTS,
            cert: None,
            chain: None,
            combined: None,
        }
    }

    /// The live path of a derived file, if it has one.
    pub fn derived_path(&self, d: Derived) -> Option<&PathBuf> {
        match d {
            Derived::Cert => self.cert.as_ref(),
            Derived::Chain => self.chain.as_ref(),
            Derived::Combined => self.combined.as_ref(),
        }
    }

    /// The derived files that have a live path, with it, in [`Derived::ALL`] order.
    pub fn derived(&self) -> Vec<(Derived, &PathBuf)> {
        Derived::ALL
            .into_iter()
            .filter_map(|d| self.derived_path(d).map(|p| (d, p)))
            .collect()
    }
}

/// A state directory's store of live pairs. Reading needs no lock; writing goes through
/// [`Store::lock`].
#[derive(Clone, Debug)]
pub struct Store {
    state_dir: StateDir,
}

/// The store while this process holds its lock: the only way to write. Dropping it
/// releases the lock.
///
/// Different certificates may be deployed from several threads through one `Locked`;
/// one certificate must not be written by two threads at once.
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a Store,
    _lock: lock::LockFile,
    /// The `clean` marker was there when the lock was taken: nothing to recover.
    clean: bool,
    /// Every configured certificate was recovered (see [`Locked::recovered_all`]).
    recovered_all: std::sync::atomic::AtomicBool,
}

impl Drop for Locked<'_> {
    /// Puts the `clean` marker back when nothing is left half-done: the state_dir was clean
    /// or every certificate was recovered, no write failed, and no stage is open.
    fn drop(&mut self) {
        let state_dir = &self.store.state_dir;
        let recovered = self.clean || self.recovered_all.load(std::sync::atomic::Ordering::SeqCst);
        let changed = state_dir.is_dirty() || !self.clean;
        // What waited for the end of the pass is made durable first, and the marker says so.
        let synced = state_dir.sync();
        if !recovered || !changed || synced.is_err() || !self.store.journals().is_empty() {
            return;
        }
        if let Err(e) = state_dir.mark_clean() {
            tracing::debug!("The clean marker was not written: {e}");
        }
    }
}

/// What a deploy did.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Deployed {
    /// The manifest of the pair now live.
    pub manifest: Manifest,
    /// The snapshot of the pair it replaced (`None` when nothing whole was live).
    pub snapshot: Option<SnapshotInfo>,
    /// Ids of snapshots pruned afterwards.
    pub pruned: Vec<String>,
    /// What recovery cleaned up before the deploy.
    pub recovered: Recovered,
    /// Whether plain files found at the live paths were adopted: kept as the first
    /// snapshot, and the live paths are links into certkeeper's generations now.
    pub adopted: bool,
    /// What an operator should know, such as a live file edited in place.
    pub warnings: Vec<String>,
}

/// A pair switched in as the live pair but not committed: the pair it replaced is kept, and
/// a crash before [`Locked::commit`] or [`Locked::revert`] is undone by the next recovery.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Staged {
    /// The manifest of the staged pair, now live.
    pub manifest: Manifest,
    /// The snapshot of the pair it replaced (`None` when nothing whole was live).
    pub snapshot: Option<SnapshotInfo>,
    /// The replaced pair as it really was (`None` when nothing whole was live).
    pub previous: Option<Manifest>,
    /// Whether plain files found at the live paths were adopted.
    pub adopted: bool,
    /// What an operator should know, such as a live file edited in place.
    pub warnings: Vec<String>,
    /// What recovery cleaned up first.
    pub recovered: Recovered,
    journal: stage::Journal,
}

/// What a rollback did; a caller reloads the service and verifies it serves
/// `manifest.fingerprint`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RolledBack {
    /// The snapshot that was restored.
    pub restored: SnapshotInfo,
    /// The manifest of the pair now live (the restored one).
    pub manifest: Manifest,
    /// The snapshot that keeps the replaced pair, so that this rollback can be undone.
    pub replaced: Option<SnapshotInfo>,
    /// Ids of snapshots pruned afterwards.
    pub pruned: Vec<String>,
    /// What recovery cleaned up before the rollback.
    pub recovered: Recovered,
    /// What an operator should know, such as a live file edited in place.
    pub warnings: Vec<String>,
}

/// Refuses, before anything is written, what certkeeper must not replace at the live paths
/// of `spec` or under `state_dir` for it (issued by `issuers`): a device, a FIFO, a socket, a
/// link to one of them ([`Error::NotOurs`], naming the path and what is there). Only looks.
pub fn check_targets(state_dir: &StateDir, spec: &PairSpec, issuers: &[String]) -> Result<()> {
    Layout::new(spec)?.check_targets(false)?;
    state_dir.check_certificate(&spec.name, issuers)
}

/// [`check_targets`] for the live paths only (for `config check`, which does not look
/// inside state_dir).
pub fn check_live_targets(spec: &PairSpec) -> Result<()> {
    Layout::new(spec)?.check_targets(false)
}

impl Store {
    /// Opens `state_dir`, creating it (and its parents) when missing, and makes it 0711.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Store> {
        Ok(Store {
            state_dir: StateDir::open(state_dir)?,
        })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &StateDir {
        &self.state_dir
    }

    /// Takes the state_dir lock, waiting while another process holds it, and removes the
    /// temporary files a crash left under state_dir.
    pub fn lock(&self) -> Result<Locked<'_>> {
        self.locked(true)
    }

    /// Takes the state_dir lock, or fails with [`Error::Locked`] when it is held; as
    /// [`lock`](Self::lock) otherwise.
    pub fn try_lock(&self) -> Result<Locked<'_>> {
        self.locked(false)
    }

    fn locked(&self, wait: bool) -> Result<Locked<'_>> {
        let lock = self.state_dir.lock(wait)?;
        self.state_dir.check_own_dirs()?;
        let clean = self.state_dir.is_clean();
        self.state_dir.clean_leftovers();
        Ok(Locked {
            store: self,
            _lock: lock,
            clean,
            recovered_all: Default::default(),
        })
    }

    /// The snapshots of a certificate, newest first, each verified against its manifest.
    pub fn snapshots(&self, spec: &PairSpec) -> Result<Vec<SnapshotInfo>> {
        Layout::new(spec)?;
        self.snapshot_store(spec).list()
    }

    /// The manifest of the live pair; `None` when certkeeper has not written it.
    pub fn live(&self, spec: &PairSpec) -> Result<Option<Manifest>> {
        let layout = Layout::new(spec)?;
        manifest::read_live(&spec.name, &spec.fullchain)
            .map_err(|e| Error::io("reading", layout.manifest, e))
    }

    fn snapshot_store(&self, spec: &PairSpec) -> Snapshots {
        self.state_dir.snapshots(&spec.name)
    }

    fn journals(&self) -> Journals {
        self.state_dir.journals()
    }
}

impl Locked<'_> {
    /// The state directory, while this lock is held: what is written through it is written
    /// under the lock.
    pub fn state_dir(&self) -> &StateDir {
        &self.store.state_dir
    }

    /// Finishes or undoes an interrupted swap of this pair and removes leftovers. Every
    /// command that writes the store runs it first; [`stage`](Self::stage),
    /// [`deploy`](Self::deploy) and [`rollback`](Self::rollback) do so themselves.
    ///
    /// A stage that was neither committed nor reverted (the process died while the service
    /// was being reloaded or verified) is reverted: the pair it replaced is live again.
    ///
    /// Nothing is looked at when the `clean` marker was there when the lock was taken.
    pub fn recover(&self, spec: &PairSpec) -> Result<Recovered> {
        if self.clean {
            return Ok(Recovered::default());
        }
        self.writing(|| self.recover_unmarked(spec))
    }

    /// Recovers every configured certificate (`specs`: all of them), each as
    /// [`recover`](Self::recover) does, and returns each one's result; when none failed, the
    /// `clean` marker is put back when this lock is released. Nothing is looked at when the
    /// marker was there.
    pub fn recover_all<'s>(
        &self,
        specs: impl IntoIterator<Item = &'s PairSpec>,
    ) -> Vec<(&'s PairSpec, Result<Recovered>)> {
        let out: Vec<_> = specs.into_iter().map(|s| (s, self.recover(s))).collect();
        if out.iter().all(|(_, r)| r.is_ok()) {
            self.recovered_all();
        }
        out
    }

    /// Says that every configured certificate was recovered without error, so that the
    /// `clean` marker is put back when this lock is released.
    fn recovered_all(&self) {
        self.recovered_all
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Runs a write, durable when it returns: the `clean` marker is removed first, and a
    /// failure is noted (see [`StateDir`]).
    fn writing<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        self.store.state_dir.writing(Durable::Now, write)
    }

    fn recover_unmarked(&self, spec: &PairSpec) -> Result<Recovered> {
        let layout = Layout::new(spec)?;
        // Recovery writes at the live paths too: never where a device, FIFO or socket sits.
        layout.check_targets(false)?;
        let snaps = self.store.snapshot_store(spec);
        let journals = self.store.journals();
        let mut out = Recovered::default();
        out.removed.extend(journals.remove_leftover(&spec.name)?);
        match journals.read(&spec.name) {
            Ok(None) => {}
            Ok(Some(journal)) => match stage::revert(&layout, &snaps, &journals, &journal) {
                Ok(r) => {
                    out.undone = Some(if r.restored {
                        format!(
                            "an unfinished deploy (generation {}) was undone; the previous pair is live again",
                            journal.staged
                        )
                    } else {
                        "an unfinished first deploy was undone; nothing is live, as before".into()
                    })
                }
                Err(e @ Error::RevertImpossible { .. }) => {
                    journals.remove(&spec.name)?;
                    out.warnings.push(e.to_string());
                }
                Err(e) => return Err(e),
            },
            // A journal that cannot be used (moved aside) describes nothing that can be
            // undone; `.live` still names the pair readers see.
            Err(e @ Error::Tampered { .. }) => out.warnings.push(e.to_string()),
            Err(e) => return Err(e),
        }
        let rest = recovery::recover(&layout, &snaps)?;
        out.removed.extend(rest.removed);
        out.completed.extend(rest.completed);
        out.warnings.extend(rest.warnings);
        Ok(out)
    }

    /// Makes `fullchain` and `privkey` the live pair and commits at once: [`stage`] then
    /// [`commit`], for callers with nothing to check in between.
    ///
    /// [`stage`]: Self::stage
    /// [`commit`]: Self::commit
    pub fn deploy(&self, spec: &PairSpec, fullchain: &[u8], privkey: &[u8]) -> Result<Deployed> {
        let staged = self.stage(spec, fullchain, privkey)?;
        self.commit(spec, staged)
    }

    /// Switches `fullchain` and `privkey` in as the live pair in one atomic step, keeping the
    /// pair it replaces: that pair is kept as a snapshot, the new one is written beside it
    /// (fsynced, read back), a journal records the stage, `.live` is switched and the live
    /// paths are read back. The caller then reloads and verifies the service, and calls
    /// [`commit`](Self::commit) or [`revert`](Self::revert).
    ///
    /// The store does not judge the material (chain, key match, names): the caller has
    /// done so. On error the old pair is still live and no partial files remain.
    pub fn stage(&self, spec: &PairSpec, fullchain: &[u8], privkey: &[u8]) -> Result<Staged> {
        self.writing(|| self.stage_unmarked(spec, fullchain, privkey))
    }

    fn stage_unmarked(&self, spec: &PairSpec, fullchain: &[u8], privkey: &[u8]) -> Result<Staged> {
        let (layout, staged, links_first) = self.prepare(spec, fullchain, privkey)?;
        self.switch(&layout, spec, staged, links_first)
    }

    /// Stages several pairs, as [`stage`](Self::stage) stages each, with their fsyncs
    /// batched: every new generation, snapshot and journal is written, all of it is made
    /// durable at once (one `syncfs` per file system), then every `.live` is switched, and
    /// the switches are made durable at once. A crash at any moment leaves each certificate
    /// with its old pair or its new one, whole, and a journal that reverts the new one.
    /// One result per pair, in order.
    pub fn stage_all(&self, pairs: &[(&PairSpec, &[u8], &[u8])]) -> Vec<Result<Staged>> {
        let state_dir = &self.store.state_dir;
        if let Err(e) = state_dir.mark_dirty() {
            return pairs
                .iter()
                .map(|(spec, ..)| Err(again(spec, &e)))
                .collect();
        }
        let (prepared, synced) = in_parallel(pairs.to_vec(), |(spec, fullchain, privkey)| {
            self.prepare(spec, fullchain, privkey)
        });
        // Nothing is switched yet when the first sync fails: each stage is undone and fails
        // with the sync's error.
        let prepared = self.undone_unless_synced(prepared, pairs, synced);
        let (switched, synced) = in_parallel(
            prepared.into_iter().zip(pairs).collect(),
            |(p, (spec, ..))| {
                p.and_then(|(layout, staged, links_first)| {
                    self.switch(&layout, spec, staged, links_first)
                        .map(|staged| (layout, staged, links_first))
                })
            },
        );
        // A switch that may not survive a crash is not reported as done: undone now.
        let out: Vec<Result<Staged>> = self
            .undone_unless_synced(switched, pairs, synced)
            .into_iter()
            .map(|r| r.map(|(_, staged, _)| staged))
            .collect();
        if out.iter().any(Result::is_err) {
            state_dir.note_failure();
        }
        out
    }

    /// Commits several stages, as [`commit`](Self::commit) commits each, with their fsyncs
    /// batched into one sync at the end. One result per stage, in order.
    pub fn commit_all(&self, stages: Vec<(&PairSpec, Staged)>) -> Vec<Result<Deployed>> {
        let state_dir = &self.store.state_dir;
        if let Err(e) = state_dir.mark_dirty() {
            return stages
                .iter()
                .map(|(spec, _)| Err(again(spec, &e)))
                .collect();
        }
        let (done, synced) =
            in_parallel(stages, |(spec, staged)| self.commit_unmarked(spec, staged));
        if let Err(e) = &synced {
            // The new pairs are live and served; a crash before the data reaches the disk
            // may revert them (their journals come back), which recovery does cleanly.
            tracing::warn!("Committed deploys may not be durable yet: {e}");
        }
        if synced.is_err() || done.iter().any(Result::is_err) {
            state_dir.note_failure();
        }
        done
    }

    /// The stages of `pairs` as they are when `synced` is `Ok`; otherwise each one is undone
    /// and fails with the sync's error.
    fn undone_unless_synced(
        &self,
        stages: Vec<Result<(Layout, Staged, bool)>>,
        pairs: &[(&PairSpec, &[u8], &[u8])],
        synced: Result<()>,
    ) -> Vec<Result<(Layout, Staged, bool)>> {
        let Err(e) = synced else {
            return stages;
        };
        stages
            .into_iter()
            .zip(pairs)
            .map(|(stage, (spec, ..))| match stage {
                Ok((layout, staged, _)) => {
                    self.undo(&layout, spec, &staged);
                    Err(again(spec, &e))
                }
                // Its own error says what stopped it.
                Err(own) => Err(own),
            })
            .collect()
    }

    /// Undoes a stage that failed on its way (best effort: the journal left behind, if any,
    /// makes the next recovery finish it).
    fn undo(&self, layout: &Layout, spec: &PairSpec, staged: &Staged) {
        let snaps = self.store.snapshot_store(spec);
        let _ = stage::revert(layout, &snaps, &self.store.journals(), &staged.journal);
        let _ = recovery::recover(layout, &snaps);
    }

    /// The first half of a stage: the new generation, the snapshot of the pair it replaces
    /// and the journal are written; nothing is switched.
    fn prepare(
        &self,
        spec: &PairSpec,
        fullchain: &[u8],
        privkey: &[u8],
    ) -> Result<(Layout, Staged, bool)> {
        // Nothing is written where certkeeper must not replace what is there.
        Layout::new(spec)?.check_targets(true)?;
        // A first deploy may target directories that do not exist yet (as certbot creates
        // live/<name>/): they are made 0755, like /etc/ssl/certs.
        let derived = spec.derived();
        let files = [&spec.fullchain, &spec.privkey]
            .into_iter()
            .chain(derived.iter().map(|(_, p)| *p));
        for file in files {
            if let Some(dir) = file.parent().filter(|d| !d.exists()) {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(|e| Error::io("creating", dir, e))?;
            }
        }
        let layout = Layout::new(spec)?;
        let recovered = self.recover(spec)?;
        let manifest =
            Manifest::describe(&spec.name, fullchain, privkey, OffsetDateTime::now_utc())?;
        let (mut staged, links_first) =
            self.prepare_with(&layout, spec, |n, chain_perm, key_perm| {
                layout.write_generation(n, fullchain, privkey, &manifest, chain_perm, key_perm)?;
                Ok(manifest.clone())
            })?;
        staged.recovered = recovered;
        Ok((layout, staged, links_first))
    }

    /// Restores a snapshot as the live pair and commits at once: [`stage_rollback`] then
    /// [`commit`]. The replaced pair is kept as a snapshot, so a rollback can be undone.
    ///
    /// [`stage_rollback`]: Self::stage_rollback
    /// [`commit`]: Self::commit
    pub fn rollback(&self, spec: &PairSpec, to: Option<&str>) -> Result<RolledBack> {
        let (restored, staged) = self.stage_rollback(spec, to)?;
        let manifest = staged.manifest.clone();
        let recovered = staged.recovered.clone();
        let done = self.commit(spec, staged)?;
        Ok(RolledBack {
            restored,
            manifest,
            replaced: done.snapshot,
            pruned: done.pruned,
            recovered,
            warnings: done.warnings,
        })
    }

    /// Stages a snapshot as the live pair, as [`stage`](Self::stage) stages new material.
    /// `to` names the snapshot; `None` picks the newest one whose leaf differs from the live
    /// leaf and whose SHA-256 verifies. Returns the snapshot chosen and the stage.
    pub fn stage_rollback(
        &self,
        spec: &PairSpec,
        to: Option<&str>,
    ) -> Result<(SnapshotInfo, Staged)> {
        self.writing(|| self.stage_rollback_unmarked(spec, to))
    }

    fn stage_rollback_unmarked(
        &self,
        spec: &PairSpec,
        to: Option<&str>,
    ) -> Result<(SnapshotInfo, Staged)> {
        let layout = Layout::new(spec)?;
        layout.check_targets(true)?;
        let recovered = self.recover(spec)?;
        let snaps = self.store.snapshot_store(spec);
        let live_fingerprint = match layout.live_generation()? {
            Some(n) if layout.links_in_place() => {
                live::read_generation_manifest(&layout.generation_dir(n))
                    .ok()
                    .map(|m| m.fingerprint)
            }
            _ => certkeeper_base::fsutil::read_regular(
                &spec.fullchain,
                certkeeper_base::fsutil::MAX_FILE,
            )
            .ok()
            .and_then(|pem| manifest::leaf_identity(&pem).ok())
            .map(|leaf| leaf.fingerprint),
        };
        let restored =
            rollback::choose(&spec.name, &snaps.list()?, live_fingerprint.as_deref(), to)?;
        let record = snaps.record(&restored.id)?;
        let source = snaps.path(&restored.id);
        // A snapshot taken before certkeeper derived files gets them derived from its pair,
        // so that every file the config names follows the restored pair.
        let read = |file: &str| {
            let path = source.join(file);
            atomic::read_nofollow(&path).map_err(|e| Error::io("reading", &path, e))
        };
        let (chain, key) = (read(live::FULLCHAIN_FILE)?, read(live::PRIVKEY_FILE)?);
        let manifest = Manifest {
            created: certkeeper_base::text::rfc3339(OffsetDateTime::now_utc()),
            ..record.manifest
        }
        .with_derived(&chain, &key);
        let mut staged = self.stage_with(&layout, spec, |n, _, key_perm| {
            layout
                .link_generation(n, &source, &manifest, key_perm)
                .map_err(|e| match e {
                    // The snapshot changed since it was listed: say so, not just "read-back".
                    Error::ReadBack { .. } => Error::SnapshotCorrupt {
                        name: spec.name.clone(),
                        id: restored.id.clone(),
                        problem: e.to_string(),
                    },
                    other => other,
                })?;
            Ok(manifest.clone())
        })?;
        staged.recovered = recovered;
        Ok((restored, staged))
    }

    /// Makes a stage final: the journal is removed (the commit point), generations other
    /// than the new one and the one it replaced are removed, and snapshots beyond
    /// `keep_snapshots` are pruned.
    pub fn commit(&self, spec: &PairSpec, staged: Staged) -> Result<Deployed> {
        self.writing(|| self.commit_unmarked(spec, staged))
    }

    fn commit_unmarked(&self, spec: &PairSpec, staged: Staged) -> Result<Deployed> {
        let layout = Layout::new(spec)?;
        self.store.journals().remove(&spec.name)?;
        let keep: Vec<u64> = std::iter::once(staged.journal.staged)
            .chain(staged.journal.previous)
            .collect();
        if let Err(e) = layout.remove_generations_except(&keep) {
            self.store.state_dir.note_failure();
            tracing::warn!(cert = %spec.name, error = %e, "Old generations not removed; the next recovery will.");
        }
        let pruned = self
            .store
            .snapshot_store(spec)
            .prune(spec.keep_snapshots)
            .unwrap_or_else(|e| {
                self.store.state_dir.note_failure();
                tracing::warn!(cert = %spec.name, error = %e, "Snapshots not pruned; the next deploy will.");
                Vec::new()
            });
        Ok(Deployed {
            manifest: staged.manifest,
            snapshot: staged.snapshot,
            pruned,
            recovered: staged.recovered,
            adopted: staged.adopted,
            warnings: staged.warnings,
        })
    }

    /// After something outside certkeeper ran (a reload command), says what of the stage is
    /// no longer as it was made: state_dir, the stage's journal or the snapshot of the
    /// replaced pair gone, a live path no longer certkeeper's link, `.live` no longer naming
    /// the staged generation, or the live files not what was staged. `Ok` when all is intact.
    /// Only looks.
    pub fn check_staged(
        &self,
        spec: &PairSpec,
        staged: &Staged,
    ) -> std::result::Result<(), Damaged> {
        let mut problems = Vec::new();
        let root = self.store.state_dir.path();
        if !root.is_dir() {
            problems.push(format!("state_dir {} is gone", root.display()));
        } else {
            let journal = self
                .store
                .state_dir
                .join(&["journal", &format!("{}.json", spec.name)]);
            if fs::symlink_metadata(&journal).is_err() {
                problems.push(format!(
                    "the journal of this deploy {} is gone",
                    journal.display()
                ));
            }
            if let Some(s) = &staged.snapshot {
                let path = self.store.snapshot_store(spec).path(&s.id);
                if !path.is_dir() {
                    problems.push(format!(
                        "snapshot {} of the replaced pair ({}) is gone",
                        s.id,
                        path.display()
                    ));
                }
            }
        }
        problems.extend(Self::live_problems(
            spec,
            staged.journal.staged,
            &staged.manifest.files,
        ));
        match problems.is_empty() {
            true => Ok(()),
            false => Err(Damaged { problems }),
        }
    }

    /// After something outside certkeeper ran (the reload after a revert of `staged`): says
    /// what of the restored pair is no longer as the revert left it: a live path gone or no
    /// longer its link, `.live` gone, other content than the replaced pair's.
    pub fn check_reverted(
        &self,
        spec: &PairSpec,
        staged: &Staged,
    ) -> std::result::Result<(), Damaged> {
        let (Ok(layout), Some(files)) = (Layout::new(spec), &staged.journal.previous_files) else {
            return Ok(());
        };
        let problems = match layout.live_generation() {
            Ok(Some(n)) => Self::live_problems(spec, n, files),
            _ => vec![format!("{} is gone", layout.live_link().display())],
        };
        match problems.is_empty() {
            true => Ok(()),
            false => Err(Damaged { problems }),
        }
    }

    /// What of the live pair of `spec` is not generation `generation` holding `files`, each
    /// as a short phrase.
    fn live_problems(
        spec: &PairSpec,
        generation: u64,
        files: &manifest::FileDigests,
    ) -> Vec<String> {
        let Ok(layout) = Layout::new(spec) else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for (path, target) in layout.links() {
            if fs::symlink_metadata(&path).is_err() {
                problems.push(format!("{} is gone", path.display()));
            } else if !fs::read_link(&path).is_ok_and(|t| t == target) {
                problems.push(format!(
                    "{} is no longer the link certkeeper made",
                    path.display()
                ));
            }
        }
        match layout.live_generation() {
            Ok(Some(n)) if n == generation => {
                if problems.is_empty()
                    && let Err(e) = layout.read_back(files)
                {
                    problems.push(e.to_string());
                }
            }
            _ => problems.push(format!(
                "{} no longer names generation {generation}",
                layout.live_link().display()
            )),
        }
        problems
    }

    /// Undoes a stage: the pair it replaced is live again (from its generation, or from the
    /// snapshot taken of it when the generation is gone), no snapshot of the rejected pair
    /// is kept, and the staged generation is removed.
    ///
    /// [`Error::RevertImpossible`] means nothing of the previous pair was left: the staged
    /// pair stays live and the stage is closed. After any other error the stage stays open
    /// and the next recovery reverts it.
    pub fn revert(&self, spec: &PairSpec, staged: &Staged) -> Result<Reverted> {
        self.writing(|| self.revert_unmarked(spec, staged))
    }

    fn revert_unmarked(&self, spec: &PairSpec, staged: &Staged) -> Result<Reverted> {
        let layout = Layout::new(spec)?;
        let journals = self.store.journals();
        let result = stage::revert(
            &layout,
            &self.store.snapshot_store(spec),
            &journals,
            &staged.journal,
        );
        if let Err(Error::RevertImpossible { .. }) = &result {
            journals.remove(&spec.name)?;
        }
        result
    }

    /// Removes snapshots beyond `keep_snapshots`, oldest first; returns their ids.
    pub fn prune(&self, spec: &PairSpec) -> Result<Vec<String>> {
        Layout::new(spec)?;
        self.writing(|| self.store.snapshot_store(spec).prune(spec.keep_snapshots))
    }

    /// The stage shared by deploy and rollback: `build` writes generation `n` with the
    /// given permissions; then the live pair is snapshotted, the journal written, `.live`
    /// switched and the live paths read back.
    fn stage_with(
        &self,
        layout: &Layout,
        spec: &PairSpec,
        build: impl FnOnce(u64, Perm, Perm) -> Result<Manifest>,
    ) -> Result<Staged> {
        let (staged, links_first) = self.prepare_with(layout, spec, build)?;
        self.switch(layout, spec, staged, links_first)
    }

    /// [`stage_with`](Self::stage_with) up to the switch: returns the stage and whether the
    /// live paths still have to become links.
    fn prepare_with(
        &self,
        layout: &Layout,
        spec: &PairSpec,
        build: impl FnOnce(u64, Perm, Perm) -> Result<Manifest>,
    ) -> Result<(Staged, bool)> {
        let snaps = self.store.snapshot_store(spec);
        let journals = self.store.journals();
        let (old, links_first, adopted) = match layout.inspect()? {
            Live::Managed { generation } => (Some(generation), false, false),
            Live::Foreign { whole: true } => {
                let n = layout.next_generation()?;
                layout.adopt(n)?;
                (Some(n), false, true)
            }
            Live::Foreign { whole: false } | Live::Absent => (None, true, false),
        };

        // Mode, owner and group are kept from the live files (adopted ones included) unless
        // the spec sets them; a first deploy gets the defaults and the process's user.
        let key_perm = Layout::current_perm(&layout.privkey, DEFAULT_KEY_MODE);
        let key_perm = Perm {
            mode: spec.mode.unwrap_or(key_perm.mode),
            owner: spec.owner.or(key_perm.owner),
            group: spec.group.or(key_perm.group),
        };
        let chain_perm = Layout::current_perm(&layout.fullchain, FULLCHAIN_MODE);

        let n = layout.next_generation()?;
        let manifest = build(n, chain_perm, key_perm)?;
        let new_dir = layout.generation_dir(n);

        let mut journal = stage::Journal::new(&spec.name, n);
        let mut snapshot = None;
        let mut previous = None;
        let mut warnings = Vec::new();
        if let Some(g) = old {
            let dir = layout.generation_dir(g);
            let taken = self.keep_previous(layout, spec, &snaps, &dir);
            match taken {
                Ok(kept) => {
                    journal.previous = Some(g);
                    journal.previous_files = Some(kept.files);
                    warnings.extend(kept.warning);
                    if let Some((s, new)) = kept.snapshot {
                        journal.snapshot = Some(s.id.clone());
                        journal.snapshot_new = new;
                        snapshot = Some(s);
                    }
                    previous = kept.manifest;
                }
                Err(e) => {
                    discard(layout, &new_dir);
                    return Err(e);
                }
            }
        }

        if let Err(e) = journals.write(&journal) {
            discard(layout, &new_dir);
            if let (Some(id), true) = (&journal.snapshot, journal.snapshot_new) {
                let _ = snaps.remove(id);
            }
            return Err(e);
        }
        let staged = Staged {
            manifest,
            snapshot,
            previous,
            adopted,
            warnings,
            recovered: Recovered::default(),
            journal,
        };
        Ok((staged, links_first))
    }

    /// The second half of a stage: `.live` is switched to the new generation and the live
    /// paths are read back.
    fn switch(
        &self,
        layout: &Layout,
        spec: &PairSpec,
        staged: Staged,
        links_first: bool,
    ) -> Result<Staged> {
        let switched = layout
            .commit(staged.journal.staged, links_first)
            .and_then(|()| layout.read_back(&staged.manifest.files));
        if let Err(e) = switched {
            // Best effort: the error that caused it is the one reported, and the next
            // recovery reverts whatever this could not (the journal is still there then).
            self.undo(layout, spec, &staged);
            return Err(e);
        }
        Ok(staged)
    }

    /// Keeps the pair of generation `dir` (the one being replaced) as a snapshot of what is
    /// really there: a pair whose files were edited in place since certkeeper wrote them is
    /// described from its files and marked unverified, with a warning naming the edited
    /// live file; a pair that cannot be described at all is not kept (warning), but its
    /// generation still is, for a revert.
    fn keep_previous(
        &self,
        layout: &Layout,
        spec: &PairSpec,
        snaps: &Snapshots,
        dir: &Path,
    ) -> Result<KeptPrevious> {
        let read = |file: &str| {
            let path = dir.join(file);
            atomic::read_nofollow(&path).map_err(|e| Error::io("reading", &path, e))
        };
        let (chain, key) = (read(live::FULLCHAIN_FILE)?, read(live::PRIVKEY_FILE)?);
        // Every file of the generation as it really is, derived ones included.
        let files = manifest::FileDigests::read_dir(dir)?;
        let written = live::read_generation_manifest(dir).ok();
        let mut edited = Vec::new();
        if let Some(w) = &written {
            let mut compared = vec![
                (
                    &layout.fullchain,
                    Some(&files.fullchain),
                    Some(&w.files.fullchain),
                ),
                (
                    &layout.privkey,
                    Some(&files.privkey),
                    Some(&w.files.privkey),
                ),
            ];
            for (d, path) in &layout.derived {
                compared.push((path, files.derived(*d), w.files.derived(*d)));
            }
            for (path, now, then) in compared {
                let (Some(now), Some(then)) = (now, then) else {
                    continue;
                };
                if now != then {
                    edited.push(format!(
                        "{} was changed outside certkeeper (sha256 {}…, certkeeper wrote {}…)",
                        path.display(),
                        &now[..12],
                        &then[..12]
                    ));
                }
            }
        }
        let manifest = match written {
            Some(w) if edited.is_empty() && w.files == files => w,
            _ => match Manifest::describe(&spec.name, &chain, &key, OffsetDateTime::now_utc()) {
                // The snapshot keeps the files as they are, and records them so.
                Ok(m) => Manifest {
                    files: files.clone(),
                    ..m
                },
                Err(e) => {
                    let mut what = edited.join("; ");
                    if !what.is_empty() {
                        what.push_str("; ");
                    }
                    return Ok(KeptPrevious {
                        files,
                        manifest: None,
                        snapshot: None,
                        warning: Some(format!(
                            "{what}the replaced pair is not kept as a snapshot: {e}"
                        )),
                    });
                }
            },
        };
        let unverified = (!edited.is_empty()).then(|| {
            format!(
                "taken from live files edited in place: {}",
                edited.join("; ")
            )
        });
        let (info, new) = snaps.take(dir, &manifest, unverified)?;
        let warning = (!edited.is_empty()).then(|| {
            format!(
                "{}; the pair as found is kept as snapshot {}, marked unverified",
                edited.join("; "),
                info.id
            )
        });
        Ok(KeptPrevious {
            files,
            manifest: Some(manifest),
            snapshot: Some((info, new)),
            warning,
        })
    }
}

/// The replaced pair, as [`Locked::keep_previous`] found and kept it.
struct KeptPrevious {
    files: manifest::FileDigests,
    manifest: Option<Manifest>,
    snapshot: Option<(SnapshotInfo, bool)>,
    warning: Option<String>,
}

/// Runs `work` over `items` on up to four threads (different certificates' files: one
/// certificate is never written by two threads), each with its fsyncs deferred to one sync
/// at its end (see [`atomic::deferring`]). Returns the results in the items' order and the
/// first sync error: after an `Ok`, everything `work` wrote is durable.
fn in_parallel<T: Send, R: Send>(
    items: Vec<T>,
    work: impl Fn(T) -> R + Sync,
) -> (Vec<R>, Result<()>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(items.len());
    if threads <= 1 {
        return atomic::deferring(|| items.into_iter().map(&work).collect());
    }
    let mut chunks: Vec<Vec<(usize, T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        chunks[i % threads].push((i, item));
    }
    let work = &work;
    let done: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    atomic::deferring(|| {
                        chunk
                            .into_iter()
                            .map(|(i, item)| (i, work(item)))
                            .collect::<Vec<_>>()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            // A panic in a worker is a bug; it goes on as it would have without threads.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut synced = Ok(());
    let mut out = Vec::new();
    for (results, sync) in done {
        out.extend(results);
        if synced.is_ok() {
            synced = sync;
        }
    }
    out.sort_by_key(|(i, _)| *i);
    (out.into_iter().map(|(_, r)| r).collect(), synced)
}

/// `e` again, for one of several pairs it stopped.
fn again(spec: &PairSpec, e: &Error) -> Error {
    Error::io(
        "staging",
        &spec.fullchain,
        std::io::Error::other(e.to_string()),
    )
}

fn discard(layout: &Layout, dir: &Path) {
    let _ = atomic::remove_tree(dir);
    let _ = atomic::sync_dir(&layout.dir);
}

/// What a command run after a swap (a reload) changed of what certkeeper deployed, each
/// as a short phrase (see [`Locked::check_staged`] and [`Locked::check_reverted`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("after the reload, {}", .problems.join("; "))]
pub struct Damaged {
    /// What is no longer as it was left.
    pub problems: Vec<String>,
}
