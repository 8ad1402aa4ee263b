//! The on-disk store: live pairs, their manifests, snapshots and the state_dir lock.
//!
//! Everything that writes under a certificate's live paths or under `state_dir` lives here.
//! `check` and `verify` only read through [`manifest::read_live`]. How a swap stays atomic
//! and what a reader may rely on is told in the README (the store section); in short, each pair is written into
//! a new immutable generation directory beside the live files, and one `rename(2)` of a
//! `.live` symlink, through which the live paths resolve, switches both files at once.
//!
//! ```no_run
//! # fn main() -> Result<(), certkeeper::store::Error> {
//! use certkeeper::store::{PairSpec, Store};
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

mod atomic;
pub mod error;
mod live;
mod lock;
pub mod manifest;
mod recovery;
mod rollback;
pub mod snapshot;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

pub use error::{Error, Result};
pub use lock::LOCK_FILE;
pub use manifest::Manifest;
pub use recovery::Recovered;
pub use snapshot::SnapshotInfo;

use atomic::Perm;
use live::{Layout, Live};
use snapshot::Snapshots;

/// Mode of a private key unless the spec says otherwise.
pub const DEFAULT_KEY_MODE: u32 = 0o600;
/// Mode of a fullchain file.
pub const FULLCHAIN_MODE: u32 = 0o644;
/// Snapshots kept per certificate unless the spec says otherwise.
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 5;
/// Mode of `state_dir`.
pub const STATE_DIR_MODE: u32 = 0o700;

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
    /// Mode of the private key ([`DEFAULT_KEY_MODE`] unless set).
    pub mode: u32,
    /// Owner of the private key; `None` keeps the live key's owner (the process's user
    /// for a first deploy).
    pub owner: Option<u32>,
    /// Group of the private key; `None` keeps the live key's group.
    pub group: Option<u32>,
    /// Snapshots kept ([`DEFAULT_KEEP_SNAPSHOTS`] unless set); older ones are pruned.
    pub keep_snapshots: usize,
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
            mode: DEFAULT_KEY_MODE,
            owner: None,
            group: None,
            keep_snapshots: DEFAULT_KEEP_SNAPSHOTS,
        }
    }
}

/// A state directory. Reading needs no lock; writing goes through [`Store::lock`].
#[derive(Clone, Debug)]
pub struct Store {
    state_dir: PathBuf,
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
}

impl Store {
    /// Opens `state_dir`, creating it (and its parents) when missing, and makes it 0700.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Store> {
        let state_dir = state_dir.as_ref().to_owned();
        match fs::metadata(&state_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                let e = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
                return Err(Error::io("opening state directory", state_dir, e));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = state_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("creating directory", parent, e))?;
                }
                match atomic::create_dir(&state_dir, STATE_DIR_MODE) {
                    Err(Error::Planted { .. }) if state_dir.is_dir() => {}
                    other => other?,
                }
            }
            Err(e) => return Err(Error::io("opening state directory", state_dir, e)),
        }
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(STATE_DIR_MODE))
            .map_err(|e| Error::io("changing mode of", &state_dir, e))?;
        Ok(Store { state_dir })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Takes the state_dir lock, waiting while another process holds it.
    pub fn lock(&self) -> Result<Locked<'_>> {
        Ok(Locked {
            store: self,
            _lock: lock::LockFile::acquire(&self.state_dir, true)?,
        })
    }

    /// Takes the state_dir lock, or fails with [`Error::Locked`] when it is held.
    pub fn try_lock(&self) -> Result<Locked<'_>> {
        Ok(Locked {
            store: self,
            _lock: lock::LockFile::acquire(&self.state_dir, false)?,
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
        Snapshots::new(&self.state_dir, &spec.name)
    }
}

impl Locked<'_> {
    /// Finishes or undoes an interrupted swap of this pair and removes leftovers. Every
    /// command that writes the store runs it first; [`deploy`](Self::deploy) and
    /// [`rollback`](Self::rollback) do so themselves.
    pub fn recover(&self, spec: &PairSpec) -> Result<Recovered> {
        let layout = Layout::new(spec)?;
        recovery::recover(&layout, &self.store.snapshot_store(spec))
    }

    /// Makes `fullchain` and `privkey` the live pair in one atomic step: keeps the live
    /// pair as a snapshot, writes the new one beside it (fsynced, read back), switches,
    /// reads the live paths back, and prunes old snapshots.
    ///
    /// The store does not judge the material (chain, key match, names): the caller has
    /// done so. On error the old pair is still live and no partial files remain.
    pub fn deploy(&self, spec: &PairSpec, fullchain: &[u8], privkey: &[u8]) -> Result<Deployed> {
        // A first deploy may target directories that do not exist yet (as certbot creates
        // live/<name>/): they are made 0755, like /etc/ssl/certs.
        for file in [&spec.fullchain, &spec.privkey] {
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
        let (snapshot, pruned) = self.swap(&layout, spec, |n, chain_perm, key_perm| {
            layout.write_generation(n, fullchain, privkey, &manifest, chain_perm, key_perm)?;
            Ok(manifest.clone())
        })?;
        Ok(Deployed {
            manifest,
            snapshot,
            pruned,
            recovered,
        })
    }

    /// Restores a snapshot as the live pair in one atomic step. `to` names the snapshot;
    /// `None` picks the newest one whose leaf differs from the live leaf and whose SHA-256
    /// verifies. The replaced pair is kept as a snapshot, so a rollback can be undone.
    pub fn rollback(&self, spec: &PairSpec, to: Option<&str>) -> Result<RolledBack> {
        let layout = Layout::new(spec)?;
        let recovered = self.recover(spec)?;
        let snaps = self.store.snapshot_store(spec);
        let live_fingerprint = match layout.live_generation()? {
            Some(n) if layout.links_in_place() => {
                live::read_generation_manifest(&layout.generation_dir(n))
                    .ok()
                    .map(|m| m.fingerprint)
            }
            _ => fs::read(&spec.fullchain)
                .ok()
                .and_then(|pem| manifest::leaf_identity(&pem).ok())
                .map(|leaf| leaf.fingerprint),
        };
        let restored =
            rollback::choose(&spec.name, &snaps.list()?, live_fingerprint.as_deref(), to)?;
        let record = snaps.record(&restored.id)?;
        let manifest = Manifest {
            created: manifest::rfc3339(OffsetDateTime::now_utc()),
            ..record.manifest
        };
        let source = snaps.path(&restored.id);
        let (replaced, pruned) = self.swap(&layout, spec, |n, _, key_perm| {
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
        Ok(RolledBack {
            restored,
            manifest,
            replaced,
            pruned,
            recovered,
        })
    }

    /// Removes snapshots beyond `keep_snapshots`, oldest first; returns their ids.
    pub fn prune(&self, spec: &PairSpec) -> Result<Vec<String>> {
        Layout::new(spec)?;
        self.store.snapshot_store(spec).prune(spec.keep_snapshots)
    }

    /// The swap shared by deploy and rollback: `build` writes generation `n` with the
    /// given permissions; then the live pair is snapshotted, `.live` is switched, the live
    /// paths are read back, and old generations and snapshots are removed.
    fn swap(
        &self,
        layout: &Layout,
        spec: &PairSpec,
        build: impl FnOnce(u64, Perm, Perm) -> Result<Manifest>,
    ) -> Result<(Option<SnapshotInfo>, Vec<String>)> {
        let snaps = self.store.snapshot_store(spec);
        let (old, links_first) = match layout.inspect()? {
            Live::Managed { generation } => (Some(generation), false),
            Live::Foreign { whole: true } => {
                let n = layout.next_generation()?;
                layout.adopt(n)?;
                (Some(n), false)
            }
            Live::Foreign { whole: false } | Live::Absent => (None, true),
        };

        // Mode comes from the spec; owner and group are kept from the live files.
        let (key_owner, key_group) = Layout::current_owner(&layout.privkey);
        let key_perm = Perm {
            mode: spec.mode,
            owner: spec.owner.or(key_owner),
            group: spec.group.or(key_group),
        };
        let (chain_owner, chain_group) = Layout::current_owner(&layout.fullchain);
        let chain_perm = Perm {
            mode: FULLCHAIN_MODE,
            owner: chain_owner,
            group: chain_group,
        };

        let n = layout.next_generation()?;
        let manifest = build(n, chain_perm, key_perm)?;
        let new_dir = layout.generation_dir(n);

        let snapshot = match old {
            Some(g) => {
                let dir = layout.generation_dir(g);
                // A damaged manifest.json must not block every later deploy: describe the
                // files themselves instead.
                let taken = live::read_generation_manifest(&dir)
                    .or_else(|_| live::describe_generation(&spec.name, &dir))
                    .and_then(|m| snaps.take(&dir, &m));
                match taken {
                    Ok(s) => Some(s),
                    Err(e) => {
                        discard(layout, &new_dir);
                        return Err(e);
                    }
                }
            }
            None => None,
        };

        let committed = layout.commit(n, links_first).and_then(|()| {
            for (path, digest) in [
                (&layout.fullchain, &manifest.files.fullchain),
                (&layout.privkey, &manifest.files.privkey),
            ] {
                let bytes = fs::read(path).map_err(|e| Error::io("reading back", path, e))?;
                let actual = manifest::sha256_hex(&bytes);
                if &actual != digest {
                    return Err(Error::ReadBack {
                        path: path.clone(),
                        expected: digest.clone(),
                        actual,
                    });
                }
            }
            Ok(())
        });
        if let Err(e) = committed {
            self.undo(layout, old, n, snapshot.as_ref(), &snaps);
            return Err(e);
        }

        let keep: Vec<u64> = std::iter::once(n).chain(old).collect();
        if let Err(e) = layout.remove_generations_except(&keep) {
            tracing::warn!(cert = %spec.name, error = %e, "Old generations not removed; the next recovery will.");
        }
        let pruned = snaps.prune(spec.keep_snapshots).unwrap_or_else(|e| {
            tracing::warn!(cert = %spec.name, error = %e, "Snapshots not pruned; the next deploy will.");
            Vec::new()
        });
        Ok((snapshot.map(|(s, _)| s), pruned))
    }

    /// Puts the old generation back after a failed switch and removes what the attempt
    /// made. Best effort: the error that caused it is the one reported, and recovery
    /// removes whatever this could not.
    fn undo(
        &self,
        layout: &Layout,
        old: Option<u64>,
        n: u64,
        snapshot: Option<&(SnapshotInfo, bool)>,
        snaps: &Snapshots,
    ) {
        if layout.live_generation().ok().flatten() == Some(n) {
            match old {
                Some(g) => {
                    let _ = layout.commit(g, false);
                }
                None => {
                    let _ = atomic::remove_tree(&layout.live_link());
                }
            }
        }
        if layout.live_generation().ok().flatten() != Some(n) {
            discard(layout, &layout.generation_dir(n));
        }
        if let Some((s, true)) = snapshot {
            let _ = snaps.remove(&s.id);
        }
        let _ = recovery::recover(layout, snaps);
    }
}

fn discard(layout: &Layout, dir: &Path) {
    let _ = atomic::remove_tree(dir);
    let _ = atomic::sync_dir(&layout.dir);
}
