//! The live pair's layout beside the live files: generation directories and the links that
//! make a swap of both files one atomic rename.
//!
//! In the fullchain's directory `D`, for certificate `N`:
//!
//! ```text
//! D/.certkeeper-N.gen-000007/{fullchain.pem,privkey.pem,manifest.json}   one immutable pair
//!                             {cert.pem,chain.pem,combined.pem}          derived from it
//! D/.certkeeper-N.live -> .certkeeper-N.gen-000007                       the commit point
//! D/<fullchain>        -> .certkeeper-N.live/fullchain.pem
//! <privkey>            -> .certkeeper-N.live/privkey.pem   (absolute if in another directory)
//! D/.certkeeper-N.manifest.json -> .certkeeper-N.live/manifest.json
//! <cert>, <chain>, <combined>  -> .certkeeper-N.live/cert.pem, ...      (those configured)
//! D/.certkeeper-N.tmp-<hex>                                               a link being placed
//! ```
//!
//! A swap writes a new generation, then renames a new `.live` link over the old one. Every
//! path resolves through `.live`, so at every instant all of them name the same generation.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::PairSpec;
use super::atomic::{self, Perm};
use super::derived::Derived;
use super::error::{Error, Result};
use super::manifest::{self, Manifest};

/// File names inside a generation directory.
pub(crate) const FULLCHAIN_FILE: &str = "fullchain.pem";
pub(crate) const PRIVKEY_FILE: &str = "privkey.pem";
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// Generation directories are readable by all; the key inside carries its own mode.
const GEN_DIR_MODE: u32 = 0o755;

/// Where one certificate's pair lives, and the names certkeeper uses beside it.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub name: String,
    /// The fullchain's directory, where generations and the `.live` link are.
    pub dir: PathBuf,
    pub fullchain: PathBuf,
    pub privkey: PathBuf,
    pub manifest: PathBuf,
    /// The derived files that have a live path, with it.
    pub derived: Vec<(Derived, PathBuf)>,
}

/// What the live paths hold now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Live {
    /// Managed by certkeeper: every path links through `.live` to this generation.
    Managed { generation: u64 },
    /// Files certkeeper did not place; `whole` when both exist and the fullchain parses,
    /// so they can be kept as a snapshot.
    Foreign { whole: bool },
    /// Neither live file exists.
    Absent,
}

/// What an entry beside the live files is, for one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Live,
    Generation(u64),
    Temporary,
    Other,
}

impl Layout {
    /// Validates a spec's name and paths.
    pub fn new(spec: &PairSpec) -> Result<Layout> {
        if !valid_name(&spec.name) {
            return Err(Error::InvalidName {
                name: spec.name.clone(),
            });
        }
        let invalid = |reason: &str| Error::InvalidSpec {
            name: spec.name.clone(),
            reason: reason.to_owned(),
        };
        let mut paths = vec![("fullchain", &spec.fullchain), ("privkey", &spec.privkey)];
        paths.extend(spec.derived().into_iter().map(|(d, p)| (d.key(), p)));
        for (i, &(what, path)) in paths.iter().enumerate() {
            if let Some((other, _)) = paths[..i].iter().find(|(_, p)| *p == path) {
                return Err(invalid(&format!("{other} and {what} are the same path")));
            }
            if !path.is_absolute() {
                return Err(invalid(&format!("{what} must be an absolute path")));
            }
            match path.file_name().and_then(|f| f.to_str()) {
                None => return Err(invalid(&format!("{what} has no usable file name"))),
                Some(f) if f.starts_with(".certkeeper") => {
                    return Err(invalid(&format!(
                        "{what} names start with .certkeeper are reserved"
                    )));
                }
                Some(_) => {}
            }
        }
        let manifest = manifest::live_path(&spec.name, &spec.fullchain);
        Ok(Layout {
            name: spec.name.clone(),
            dir: atomic::parent(&spec.fullchain).to_owned(),
            fullchain: spec.fullchain.clone(),
            privkey: spec.privkey.clone(),
            manifest,
            derived: spec
                .derived()
                .into_iter()
                .map(|(d, p)| (d, p.clone()))
                .collect(),
        })
    }

    pub fn live_link(&self) -> PathBuf {
        self.dir.join(format!(".certkeeper-{}.live", self.name))
    }

    pub fn generation_name(&self, n: u64) -> String {
        format!(".certkeeper-{}.gen-{n:06}", self.name)
    }

    pub fn generation_dir(&self, n: u64) -> PathBuf {
        self.dir.join(self.generation_name(n))
    }

    /// A fresh temporary name in `dir`.
    pub fn temporary(&self, dir: &Path) -> PathBuf {
        dir.join(format!(
            ".certkeeper-{}.tmp-{}",
            self.name,
            atomic::unique_suffix()
        ))
    }

    /// Each live path with the link target certkeeper gives it: relative beside the
    /// fullchain, absolute from another directory.
    pub fn links(&self) -> Vec<(PathBuf, PathBuf)> {
        let target = |path: &Path, file: &str| {
            if atomic::parent(path) == self.dir {
                PathBuf::from(format!(".certkeeper-{}.live", self.name)).join(file)
            } else {
                self.live_link().join(file)
            }
        };
        let mut out = vec![
            (
                self.fullchain.clone(),
                target(&self.fullchain, FULLCHAIN_FILE),
            ),
            (self.privkey.clone(), target(&self.privkey, PRIVKEY_FILE)),
            (self.manifest.clone(), target(&self.manifest, MANIFEST_FILE)),
        ];
        for (d, path) in &self.derived {
            out.push((path.clone(), target(path, d.file_name())));
        }
        out
    }

    /// The directories that hold names of this pair: the fullchain's first, then each other
    /// live file's, once each.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![self.dir.clone()];
        let others = std::iter::once(&self.privkey).chain(self.derived.iter().map(|(_, p)| p));
        for path in others {
            let dir = atomic::parent(path).to_owned();
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
        out
    }

    /// Classifies a file name found in one of [`Layout::dirs`].
    pub fn classify(&self, file_name: &str) -> Entry {
        let Some(rest) = file_name
            .strip_prefix(".certkeeper-")
            .and_then(|r| r.strip_prefix(self.name.as_str()))
            .and_then(|r| r.strip_prefix('.'))
        else {
            return Entry::Other;
        };
        // Suffixes are digits, hex and dashes only, so another certificate whose name
        // extends this one (`www.gen-1`) never matches these patterns.
        if rest == "live" {
            Entry::Live
        } else if let Some(n) = rest.strip_prefix("gen-") {
            match n.parse::<u64>() {
                Ok(g) if n.bytes().all(|b| b.is_ascii_digit()) => Entry::Generation(g),
                _ => Entry::Other,
            }
        } else if rest
            .strip_prefix("tmp-")
            .is_some_and(atomic::is_unique_suffix)
        {
            Entry::Temporary
        } else {
            Entry::Other
        }
    }

    /// Refuses, before anything is written, live paths certkeeper must not replace: each
    /// live path (and `.live`) is nothing, a regular file, a link to a regular file or to
    /// nothing, or the link certkeeper gives it; the nearest existing ancestor of each live
    /// directory is a directory (links followed). A device, FIFO or socket there, or a link
    /// to one, gives [`Error::NotOurs`] naming it. Without `strict` only those are refused
    /// (the look before a pass and recovery, which never write over a directory or a file
    /// they did not make); with it, anything but the above (a stage, about to write).
    pub fn check_targets(&self, strict: bool) -> Result<()> {
        let file = |path: &Path| match strict {
            true => Error::unless_file(path),
            false => Error::if_special(path),
        };
        for dir in self.dirs() {
            let mut at = dir.as_path();
            while fs::symlink_metadata(at).is_err() {
                match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p,
                    _ => break,
                }
            }
            match strict {
                true => Error::unless_dir(at, true)?,
                false => Error::if_special(at)?,
            }
        }
        for (path, target) in self.links() {
            if fs::read_link(&path).is_ok_and(|t| t == target) {
                continue;
            }
            file(&path)?;
        }
        let live = self.live_link();
        match fs::symlink_metadata(&live) {
            Ok(m) if m.file_type().is_symlink() => Ok(()),
            _ => file(&live),
        }
    }

    /// The generation `.live` points at, if it is a link of ours. That generation being a
    /// symbolic link itself is [`Error::LinkedDir`]: the live pair is never read through one
    /// (a link at another generation's name is only a leftover, removed unfollowed).
    pub fn live_generation(&self) -> Result<Option<u64>> {
        let link = self.live_link();
        match fs::read_link(&link) {
            Ok(target) => {
                let n = target.to_str().and_then(|t| match self.classify(t) {
                    Entry::Generation(n) => Some(n),
                    _ => None,
                });
                if let Some(n) = n
                    && fs::symlink_metadata(self.generation_dir(n)).is_ok_and(|m| m.is_symlink())
                {
                    return Err(atomic::linked_dir(&self.generation_dir(n)));
                }
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io("reading link", link, e)),
        }
    }

    /// Every generation directory present, ascending.
    pub fn generations(&self) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = self
            .entries(&self.dir)?
            .into_iter()
            .filter_map(|(_, e)| match e {
                Entry::Generation(n) => Some(n),
                _ => None,
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The entries of `dir` that belong to this certificate.
    pub fn entries(&self, dir: &Path) -> Result<Vec<(PathBuf, Entry)>> {
        let read = match fs::read_dir(dir) {
            Ok(read) => read,
            // A directory that does not exist yet holds nothing of this certificate.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", dir, e)),
        };
        let mut out = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                let kind = self.classify(name);
                if kind != Entry::Other {
                    out.push((entry.path(), kind));
                }
            }
        }
        Ok(out)
    }

    /// Whether every live path is the link certkeeper gives it.
    pub fn links_in_place(&self) -> bool {
        self.links()
            .iter()
            .all(|(path, target)| fs::read_link(path).is_ok_and(|t| &t == target))
    }

    /// What the live paths hold now.
    pub fn inspect(&self) -> Result<Live> {
        if let Some(generation) = self.live_generation()? {
            if self.generation_dir(generation).is_dir() && self.links_in_place() {
                return Ok(Live::Managed { generation });
            }
        }
        let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
        match (exists(&self.fullchain), exists(&self.privkey)) {
            (false, false) => Ok(Live::Absent),
            (true, true) => {
                let whole = certkeeper_base::fsutil::read_regular(
                    &self.fullchain,
                    certkeeper_base::fsutil::MAX_FILE,
                )
                .is_ok_and(|pem| manifest::leaf_identity(&pem).is_ok())
                    && fs::metadata(&self.privkey).is_ok_and(|m| m.is_file());
                Ok(Live::Foreign { whole })
            }
            _ => Ok(Live::Foreign { whole: false }),
        }
    }

    /// The mode, owner and group of the live file at `path` (following links), to carry
    /// them over to its replacement; `default_mode` and no owner when there is no such file.
    pub fn current_perm(path: &Path, default_mode: u32) -> Perm {
        match fs::metadata(path) {
            Ok(m) => Perm {
                mode: m.mode() & 0o777,
                owner: Some(m.uid()),
                group: Some(m.gid()),
            },
            Err(_) => Perm {
                mode: default_mode,
                owner: None,
                group: None,
            },
        }
    }

    /// The number for a new generation: above every one present, live or not.
    pub fn next_generation(&self) -> Result<u64> {
        let highest = self.generations()?.last().copied().unwrap_or(0);
        Ok(highest.max(self.live_generation()?.unwrap_or(0)) + 1)
    }

    /// Reads every live path (through the links) and compares its SHA-256 with `files`:
    /// what readers see now must be the pair that was meant, and the files derived from it.
    pub fn read_back(&self, files: &manifest::FileDigests) -> Result<()> {
        let mut expected = vec![
            (&self.fullchain, &files.fullchain),
            (&self.privkey, &files.privkey),
        ];
        for (d, path) in &self.derived {
            // A generation written before certkeeper derived files has no digest for them;
            // none of its own is then live at that path.
            if let Some(digest) = files.derived(*d) {
                expected.push((path, digest));
            }
        }
        for (path, digest) in expected {
            let bytes =
                certkeeper_base::fsutil::read_regular(path, certkeeper_base::fsutil::MAX_FILE)
                    .map_err(|e| Error::io("reading back", path, e))?;
            let actual = certkeeper_base::text::sha256_hex(&bytes);
            if &actual != digest {
                return Err(Error::ReadBack {
                    path: path.clone(),
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Writes a complete new generation `n` from bytes. On failure nothing of it remains.
    pub fn write_generation(
        &self,
        n: u64,
        fullchain: &[u8],
        privkey: &[u8],
        manifest: &Manifest,
        chain_perm: Perm,
        key_perm: Perm,
    ) -> Result<PathBuf> {
        let dir = self.generation_dir(n);
        atomic::create_dir(&dir, GEN_DIR_MODE)?;
        let result = (|| {
            atomic::create_file(&dir.join(FULLCHAIN_FILE), fullchain, chain_perm)?;
            atomic::create_file(&dir.join(PRIVKEY_FILE), privkey, key_perm)?;
            write_derived(&dir, fullchain, privkey, manifest, chain_perm, key_perm)?;
            write_manifest(&dir, manifest)?;
            // The generation's own entries must be durable before `.live` names it; its
            // entry in the parent becomes durable with the fsync that commits the switch.
            atomic::sync_dir(&dir)
        })();
        self.discard_on_error(&dir, result)
    }

    /// Makes generation `n` from the files of a snapshot, hard-linked where possible.
    /// The key (and the combined file) get `key_perm`; every file is read back against
    /// `manifest`. A derived file the snapshot does not hold (taken before certkeeper
    /// derived them) is derived again from the snapshot's pair: `manifest` records its
    /// digest (see [`Manifest::with_derived`]).
    pub fn link_generation(
        &self,
        n: u64,
        snapshot_dir: &Path,
        manifest: &Manifest,
        key_perm: Perm,
    ) -> Result<PathBuf> {
        let dir = self.generation_dir(n);
        atomic::create_dir(&dir, GEN_DIR_MODE)?;
        let result = (|| {
            for (file, digest) in [
                (FULLCHAIN_FILE, &manifest.files.fullchain),
                (PRIVKEY_FILE, &manifest.files.privkey),
            ] {
                let to = dir.join(file);
                atomic::link_or_copy(&snapshot_dir.join(file), &to)?;
                if file == PRIVKEY_FILE {
                    apply_perm(&to, key_perm)?;
                }
                atomic::check_digest(&to, digest)?;
            }
            let mut pair: Option<(Vec<u8>, Vec<u8>)> = None;
            for d in Derived::ALL {
                let Some(digest) = manifest.files.derived(d) else {
                    continue;
                };
                let (from, to) = (snapshot_dir.join(d.file_name()), dir.join(d.file_name()));
                if fs::symlink_metadata(&from).is_ok() {
                    atomic::link_or_copy(&from, &to)?;
                    if d.holds_key() {
                        apply_perm(&to, key_perm)?;
                    }
                } else {
                    if pair.is_none() {
                        let read = |file: &str| {
                            let path = dir.join(file);
                            atomic::read_nofollow(&path).map_err(|e| Error::io("reading", &path, e))
                        };
                        pair = Some((read(FULLCHAIN_FILE)?, read(PRIVKEY_FILE)?));
                    }
                    let (chain, key) = pair
                        .as_ref()
                        .map(|(c, k)| (c.as_slice(), k.as_slice()))
                        .unwrap_or_default();
                    let bytes = d.content(chain, key).unwrap_or_default();
                    let perm = match d.holds_key() {
                        true => key_perm,
                        false => Perm::PUBLIC,
                    };
                    atomic::create_file(&to, &bytes, perm)?;
                }
                atomic::check_digest(&to, digest)?;
            }
            write_manifest(&dir, manifest)?;
            // The generation's own entries must be durable before `.live` names it; its
            // entry in the parent becomes durable with the fsync that commits the switch.
            atomic::sync_dir(&dir)
        })();
        self.discard_on_error(&dir, result)
    }

    fn discard_on_error(&self, dir: &Path, result: Result<()>) -> Result<PathBuf> {
        match result {
            Ok(()) => Ok(dir.to_owned()),
            Err(e) => {
                // Report the first failure; a leftover is also removed by the next recovery.
                let _ = atomic::remove_tree(dir);
                let _ = atomic::sync_dir(&self.dir);
                Err(e)
            }
        }
    }

    /// Makes generation `n` live. With `links_first` the live paths are made links before
    /// `.live` changes (right when nothing or a broken pair is live: they dangle until the
    /// flip); otherwise after it (right when adopting files whose copies are in `n`).
    pub fn commit(&self, n: u64, links_first: bool) -> Result<()> {
        if links_first {
            self.place_links()?;
        }
        let target = PathBuf::from(self.generation_name(n));
        atomic::replace_symlink(&target, &self.temporary(&self.dir), &self.live_link())?;
        if !links_first {
            self.place_links()?;
        }
        Ok(())
    }

    /// Turns every live path that is not yet the right link into it.
    pub fn place_links(&self) -> Result<()> {
        for (path, target) in self.links() {
            if fs::read_link(&path).is_ok_and(|t| t == target) {
                continue;
            }
            let tmp = self.temporary(atomic::parent(&path));
            atomic::replace_symlink(&target, &tmp, &path)?;
        }
        Ok(())
    }

    /// Copies what the live paths show now into generation `n` and makes it live, so that
    /// foreign files come under management without any reader seeing a change.
    pub fn adopt(&self, n: u64) -> Result<Manifest> {
        let read = |p: &Path| {
            certkeeper_base::fsutil::read_regular(p, certkeeper_base::fsutil::MAX_FILE)
                .map_err(|e| Error::io("reading", p, e))
        };
        let fullchain = read(&self.fullchain)?;
        let privkey = read(&self.privkey)?;
        let manifest = Manifest::describe(
            &self.name,
            &fullchain,
            &privkey,
            time::OffsetDateTime::now_utc(),
        )?;
        let perm_of = |p: &Path| -> Result<Perm> {
            let m = fs::metadata(p).map_err(|e| Error::io("reading", p, e))?;
            Ok(Perm {
                mode: m.mode() & 0o7777,
                owner: Some(m.uid()),
                group: Some(m.gid()),
            })
        };
        let (chain_perm, key_perm) = (perm_of(&self.fullchain)?, perm_of(&self.privkey)?);
        self.write_generation(n, &fullchain, &privkey, &manifest, chain_perm, key_perm)?;
        self.commit(n, false)?;
        Ok(manifest)
    }

    /// Removes generation directories other than `keep`.
    pub fn remove_generations_except(&self, keep: &[u64]) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for n in self.generations()? {
            if !keep.contains(&n) {
                let dir = self.generation_dir(n);
                atomic::remove_tree(&dir)?;
                removed.push(dir);
            }
        }
        // No fsync: a removal that a crash undoes is finished by the next recovery.
        Ok(removed)
    }
}

/// Reads the manifest stored in a generation directory.
pub(crate) fn read_generation_manifest(dir: &Path) -> Result<Manifest> {
    atomic::read_json_nofollow(&dir.join(MANIFEST_FILE))
}

/// Writes the derived files of the pair into generation `dir`, each checked against the
/// digest `manifest` records for it (a manifest without one gets no such file).
fn write_derived(
    dir: &Path,
    fullchain: &[u8],
    privkey: &[u8],
    manifest: &Manifest,
    chain_perm: Perm,
    key_perm: Perm,
) -> Result<()> {
    for d in Derived::ALL {
        let Some(digest) = manifest.files.derived(d) else {
            continue;
        };
        let path = dir.join(d.file_name());
        let bytes = d.content(fullchain, privkey).unwrap_or_default();
        let perm = match d.holds_key() {
            true => key_perm,
            false => chain_perm,
        };
        atomic::create_file(&path, &bytes, perm)?;
        atomic::check_digest(&path, digest)?;
    }
    Ok(())
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| Error::io("encoding", &path, io::Error::other(e)))?;
    atomic::create_file(&path, &json, Perm::PUBLIC)
}

/// Sets mode and owner on an existing file (a hard link shares them with its snapshot).
fn apply_perm(path: &Path, perm: Perm) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if perm.owner.is_some() || perm.group.is_some() {
        std::os::unix::fs::lchown(path, perm.owner, perm.group)
            .map_err(|e| Error::io("changing owner of", path, e))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(perm.mode))
        .map_err(|e| Error::io("changing mode of", path, e))
}

/// Whether `name` is a certificate name: `[a-z0-9][a-z0-9._-]*`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(name: &str) -> Layout {
        Layout::new(&PairSpec::new(
            name,
            "/etc/tls/fullchain.pem",
            "/etc/tls/privkey.pem",
        ))
        .expect("valid spec")
    }

    #[test]
    fn names_are_classified_strictly() {
        let l = layout("www");
        assert_eq!(l.classify(".certkeeper-www.live"), Entry::Live);
        assert_eq!(
            l.classify(".certkeeper-www.gen-000012"),
            Entry::Generation(12)
        );
        assert_eq!(l.classify(".certkeeper-www.tmp-1a-0-ff"), Entry::Temporary);
        assert_eq!(l.classify(".certkeeper-www.manifest.json"), Entry::Other);
        // Names of a certificate called "www.gen-1" or "www.tmp-1" are not www's.
        assert_eq!(l.classify(".certkeeper-www.gen-1.live"), Entry::Other);
        assert_eq!(l.classify(".certkeeper-www.gen-1.gen-000002"), Entry::Other);
        assert_eq!(l.classify(".certkeeper-www.tmp-1.live"), Entry::Other);
        assert_eq!(l.classify(".certkeeper-wwwx.live"), Entry::Other);
        assert_eq!(l.classify("fullchain.pem"), Entry::Other);
    }

    #[test]
    fn specs_are_validated() {
        let bad = |name: &str, chain: &str, key: &str| {
            Layout::new(&PairSpec::new(name, chain, key)).is_err()
        };
        assert!(bad("Www", "/a/c.pem", "/a/k.pem"));
        assert!(bad("", "/a/c.pem", "/a/k.pem"));
        assert!(bad("-w", "/a/c.pem", "/a/k.pem"));
        assert!(bad("w/x", "/a/c.pem", "/a/k.pem"));
        assert!(bad("www", "a/c.pem", "/a/k.pem"));
        assert!(bad("www", "/a/c.pem", "/a/c.pem"));
        assert!(bad("www", "/a/.certkeeper-x", "/a/k.pem"));
        assert!(!bad("www.example_1-a", "/a/c.pem", "/b/k.pem"));
    }

    #[test]
    fn key_link_is_relative_only_beside_the_fullchain() {
        let same = layout("www");
        assert_eq!(
            same.links()[1].1,
            Path::new(".certkeeper-www.live/privkey.pem")
        );
        let other =
            Layout::new(&PairSpec::new("www", "/etc/tls/c.pem", "/etc/keys/k.pem")).expect("valid");
        assert_eq!(
            other.links()[1].1,
            Path::new("/etc/tls/.certkeeper-www.live/privkey.pem")
        );
        assert_eq!(other.dirs().len(), 2);
    }
}
