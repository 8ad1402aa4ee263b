//! Rotating a local CA's root without a failed handshake, in phases that passes advance:
//!
//! 1. **overlap**: `certkeeper ca rotate` makes a new root and intermediate (kept in `next/`)
//!    and `root.pem`, with the trust bundle, holds both roots; leaves still come from the old
//!    root, so clients and servers learn the new root before anything is signed by it.
//! 2. **switched**: at the first pass after the overlap, the new root signs (its key and
//!    intermediate replace the old ones); every live leaf that chains to the old root is due.
//! 3. **done**: at the first pass that finds no live leaf of the CA's certificates chaining
//!    to the old root, the old root leaves `root.pem` and the bundle, and its keys are deleted.
//!
//! `rotation.json` says the phase. Each phase's files are brought in line at every pass
//! before anything is issued ([`advance`]), so a step cut short by a crash is finished by the
//! next pass; a phase is written before the files that follow from it.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Error, LocalCa, ROOT_FILE};
use crate::store::{Durable, StateDir};
use crate::text::short_fingerprint as short;
use crate::x509::{Cert, read_certificates};

/// The rotation record in the CA's directory.
pub const ROTATION_FILE: &str = "rotation.json";
/// The new root's CA during the overlap (and until the rotation is done).
const NEXT_DIR: &str = "next";

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Both roots are trusted; the old one signs.
    Overlap,
    /// Both roots are trusted; the new one signs; leaves of the old one are due.
    Switched,
    /// Only the new root is left.
    Done,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Overlap => "overlap",
            Phase::Switched => "switched",
            Phase::Done => "done",
        })
    }
}

/// A root rotation, as `rotation.json` keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub phase: Phase,
    /// When `ca rotate` started it.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// When the new root starts to sign (the start plus the overlap).
    #[serde(with = "time::serde::rfc3339")]
    pub switch_at: OffsetDateTime,
    /// SHA-256 of the old root.
    pub old_root: String,
    /// SHA-256 of the new root.
    pub new_root: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub switched: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub done: Option<OffsetDateTime>,
}

/// The rotation of CA `name`, if one was ever started.
pub fn read(state_dir: &Path, name: &str) -> Result<Option<Rotation>, Error> {
    let path = LocalCa::dir(state_dir, name).join(ROTATION_FILE);
    let text = match crate::fsutil::read_regular_text(&path, crate::fsutil::MAX_FILE) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(super::io(&path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Damaged {
            path: path.clone(),
            reason: format!("{ROTATION_FILE} does not read ({e})"),
        })
}

fn write(state: &StateDir, name: &str, rotation: &Rotation) -> Result<(), Error> {
    let mut json = serde_json::to_vec_pretty(rotation)
        .map_err(|e| Error::Sign(format!("encoding {ROTATION_FILE}: {e}")))?;
    json.push(b'\n');
    state
        .write_file(&["ca", name], ROTATION_FILE, &json, 0o644, Durable::Now)
        .map_err(Error::Write)
}

/// Starts a rotation of CA `name`: a new root and intermediate, and both roots trusted from
/// now; the new root signs from `now + overlap`. Refused while a rotation is under way and
/// before the CA exists.
pub fn start(
    state: &StateDir,
    name: &str,
    now: OffsetDateTime,
    overlap: Duration,
) -> Result<Rotation, Error> {
    let dir = LocalCa::dir(state.path(), name);
    if !dir.join(ROOT_FILE).exists() {
        return Err(Error::NotCreated {
            name: name.to_owned(),
            path: dir,
        });
    }
    if let Some(r) = read(state.path(), name)?
        && r.phase != Phase::Done
    {
        return Err(Error::RotationUnderWay {
            name: name.to_owned(),
            phase: r.phase,
        });
    }
    let current = LocalCa::load(&dir, name, None)?;
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let next = LocalCa::create(
        &dir.join(NEXT_DIR),
        name,
        &format!("certkeeper local CA {name} root {stamp}"),
        now,
    )?;
    // A `next/` that a crash left before its rotation was recorded was never trusted.
    next.write_dir_at(state, &["ca", name], NEXT_DIR, true)?;
    let rotation = Rotation {
        phase: Phase::Overlap,
        started: now,
        switch_at: now + overlap,
        old_root: fingerprint(&current.signing_pem)?,
        new_root: fingerprint(&next.signing_pem)?,
        switched: None,
        done: None,
    };
    write(state, name, &rotation)?;
    Ok(rotation)
}

/// Brings CA `name`'s files in line with its rotation's phase and moves the phase on when
/// its time has come: to `switched` once the overlap has passed, to `done` once no leaf in
/// `live` (the live fullchains of the certificates this CA issues for) chains to the old
/// root. Returns what changed, one line each; nothing without a rotation under way.
pub fn advance(
    state: &StateDir,
    name: &str,
    live: &[(&str, &Path)],
    now: OffsetDateTime,
) -> Result<Vec<String>, Error> {
    let Some(mut rotation) = read(state.path(), name)? else {
        return Ok(Vec::new());
    };
    let dir = LocalCa::dir(state.path(), name);
    let mut steps = Vec::new();
    match rotation.phase {
        Phase::Done => return Ok(steps),
        Phase::Overlap => {
            // The old root first: it still signs.
            let (new_root, old_root) = roots(&dir, &rotation)?;
            let both = pem_of(&[&old_root, &new_root]);
            if ensure(state, name, ROOT_FILE, both.as_bytes(), 0o644)? {
                steps.push(format!(
                    "root.pem holds the old and the new root ({})",
                    short(&rotation.new_root)
                ));
            }
            if now < rotation.switch_at {
                return Ok(steps);
            }
            rotation.phase = Phase::Switched;
            rotation.switched = Some(now);
            write(state, name, &rotation)?;
            steps.push(format!(
                "switched: new leaves come from the new root {}; leaves of the old root are due",
                short(&rotation.new_root)
            ));
        }
        Phase::Switched => {}
    }
    let (new_root, old_root) = switch_files(state, name, &rotation, &mut steps)?;
    let waiting: Vec<&str> = live
        .iter()
        .filter(|(_, fullchain)| chains_to(fullchain, &old_root))
        .map(|(cert, _)| *cert)
        .collect();
    if !waiting.is_empty() {
        return Ok(steps);
    }
    ensure(
        state,
        name,
        ROOT_FILE,
        pem_of(&[&new_root]).as_bytes(),
        0o644,
    )?;
    rotation.phase = Phase::Done;
    rotation.done = Some(now);
    write(state, name, &rotation)?;
    state
        .remove(&["ca", name], NEXT_DIR)
        .map_err(Error::Write)?;
    steps.push(format!(
        "retired the old root {}: no live leaf chains to it",
        short(&rotation.old_root)
    ));
    Ok(steps)
}

/// In the `switched` phase: the new root's key and intermediate sign, and `root.pem` holds
/// the new root then the old one. Returns the new and the old root.
fn switch_files(
    state: &StateDir,
    name: &str,
    rotation: &Rotation,
    steps: &mut Vec<String>,
) -> Result<(Cert, Cert), Error> {
    let dir = LocalCa::dir(state.path(), name);
    let next_dir = dir.join(NEXT_DIR);
    let (new_root, old_root) = roots(&dir, rotation)?;
    // The intermediate first: until the root key follows, the old root still signs new
    // intermediates, which the old root's certificate verifies.
    let mut changed = ensure(
        state,
        name,
        "intermediate.pem",
        read_text(&next_dir.join("intermediate.pem"))?.as_bytes(),
        0o600,
    )?;
    changed |= ensure(
        state,
        name,
        "root.key",
        read_text(&next_dir.join("root.key"))?.as_bytes(),
        0o600,
    )?;
    let both = pem_of(&[&new_root, &old_root]);
    changed |= ensure(state, name, ROOT_FILE, both.as_bytes(), 0o644)?;
    if changed {
        steps.push(format!(
            "the new root {} signs; the old root {} is still trusted",
            short(&rotation.new_root),
            short(&rotation.old_root)
        ));
    }
    Ok((new_root, old_root))
}

/// The new root (from `next/`) and the old one (from the CA's `root.pem`) of `rotation`, of
/// the CA in `dir`.
fn roots(dir: &Path, rotation: &Rotation) -> Result<(Cert, Cert), Error> {
    let next_dir = dir.join(NEXT_DIR);
    let new_root = root_with(
        &read_text(&next_dir.join(ROOT_FILE))?,
        &rotation.new_root,
        &next_dir,
    )?;
    let old_root = root_with(&read_text(&dir.join(ROOT_FILE))?, &rotation.old_root, dir)?;
    Ok((new_root, old_root))
}

/// The text of a file of the CA.
fn read_text(path: &Path) -> Result<String, Error> {
    crate::fsutil::read_regular_text(path, crate::fsutil::MAX_FILE).map_err(|e| super::io(path, e))
}

/// `certs` as PEM, in order.
fn pem_of(certs: &[&Cert]) -> String {
    certs
        .iter()
        .map(|c| crate::x509::pem::write("CERTIFICATE", &c.der))
        .collect()
}

/// The root of CA `name` that leaves the trust while its rotation is `switched`: leaves
/// that chain to it are due.
pub fn retiring(state_dir: &Path, name: &str) -> Option<Cert> {
    let rotation = read(state_dir, name).ok()??;
    if rotation.phase != Phase::Switched {
        return None;
    }
    let dir = LocalCa::dir(state_dir, name);
    root_with(
        &read_text(&dir.join(ROOT_FILE)).ok()?,
        &rotation.old_root,
        &dir,
    )
    .ok()
}

/// Whether the chain in `fullchain` ends at `root`: its last certificate was issued by it.
pub fn chains_to(fullchain: &Path, root: &Cert) -> bool {
    let Ok(bytes) = crate::fsutil::read_regular(fullchain, crate::fsutil::MAX_FILE) else {
        return false;
    };
    match read_certificates(&bytes) {
        Ok((certs, _)) => certs
            .last()
            .is_some_and(|top| top.issuer_raw == root.subject_raw || top.der == root.der),
        Err(_) => false,
    }
}

/// The certificate of `pem` whose SHA-256 is `fingerprint`.
fn root_with(pem: &str, fingerprint: &str, dir: &Path) -> Result<Cert, Error> {
    let (certs, _) = read_certificates(pem.as_bytes()).map_err(|e| Error::Damaged {
        path: dir.to_owned(),
        reason: format!("{ROOT_FILE}: {e}"),
    })?;
    certs
        .into_iter()
        .find(|c| c.fingerprint == fingerprint)
        .ok_or_else(|| Error::Damaged {
            path: dir.to_owned(),
            reason: format!(
                "{ROOT_FILE} lacks the root {} that {ROTATION_FILE} names",
                short(fingerprint)
            ),
        })
}

/// Writes `state_dir/ca/<name>/<file>` when its content is not `bytes`; whether it wrote.
fn ensure(
    state: &StateDir,
    name: &str,
    file: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<bool, Error> {
    let path = state.join(&["ca", name, file]);
    if crate::fsutil::read_regular(&path, crate::fsutil::MAX_FILE).is_ok_and(|b| b == bytes) {
        return Ok(false);
    }
    state
        .write_file(&["ca", name], file, bytes, mode, Durable::Now)
        .map_err(Error::Write)?;
    Ok(true)
}

/// The SHA-256 of the first certificate of `pem`.
fn fingerprint(pem: &str) -> Result<String, Error> {
    read_certificates(pem.as_bytes())
        .ok()
        .and_then(|(certs, _)| certs.into_iter().next())
        .map(|c| c.fingerprint)
        .ok_or_else(|| Error::Sign("a root that does not read back".into()))
}

/// How many earlier trust bundles are kept under `ca/<name>/bundles/`.
const KEPT_BUNDLES: usize = 10;

/// Writes the trust bundle at `path` when it does not hold CA `name`'s roots (`root.pem`)
/// byte for byte; whether it wrote. What was there is kept first under
/// `state_dir/ca/<name>/bundles/` (the last [`KEPT_BUNDLES`]), then the new content replaces
/// it in one rename (a device or other special file there is refused).
pub fn write_bundle(
    state: &StateDir,
    name: &str,
    path: &Path,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let roots_path = LocalCa::root_path(state.path(), name);
    let roots = crate::fsutil::read_regular(&roots_path, crate::fsutil::MAX_FILE)
        .map_err(|e| super::io(&roots_path, e))?;
    let current = match crate::fsutil::read_regular(path, crate::fsutil::MAX_FILE) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(super::io(path, e)),
    };
    if current.as_deref() == Some(roots.as_slice()) {
        return Ok(false);
    }
    if let Some(old) = current {
        keep_bundle(state, name, &old, now)?;
    }
    let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else {
        return Err(super::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        ));
    };
    crate::store::atomic::replace_file(dir, file, &roots, crate::store::atomic::Perm::PUBLIC, true)
        .map_err(Error::Write)?;
    Ok(true)
}

/// Keeps an earlier bundle as `bundles/<unix nanoseconds>.pem`, and the last
/// [`KEPT_BUNDLES`] only.
fn keep_bundle(state: &StateDir, name: &str, old: &[u8], now: OffsetDateTime) -> Result<(), Error> {
    let file = format!("{:020}.pem", now.unix_timestamp_nanos());
    state
        .write_file(&["ca", name, "bundles"], &file, old, 0o644, Durable::Now)
        .map_err(Error::Write)?;
    let dir = state.join(&["ca", name, "bundles"]);
    let mut kept: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| super::io(&dir, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".pem"))
        .collect();
    kept.sort();
    let surplus = kept.len().saturating_sub(KEPT_BUNDLES);
    for old in &kept[..surplus] {
        state
            .remove(&["ca", name, "bundles"], old)
            .map_err(Error::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyType, Usage};

    const DAY: Duration = Duration::from_secs(86_400);

    /// A CA `internal` under a fresh state_dir, with one leaf issued to `live.pem`.
    fn setup(now: OffsetDateTime) -> (tempfile::TempDir, StateDir) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        issue_to(&state, "live.pem", now);
        (dir, state)
    }

    fn issue_to(state: &StateDir, file: &str, now: OffsetDateTime) {
        let mut ca = LocalCa::open(state, "internal", now, &[]).unwrap();
        let key = crate::keys::generate(KeyType::EcdsaP256).unwrap();
        let chain = ca
            .issue(&["a.test".into()], &key, 30 * DAY, Usage::default(), now)
            .unwrap();
        std::fs::write(state.path().join(file), chain).unwrap();
    }

    fn roots(state: &StateDir) -> Vec<String> {
        let text = std::fs::read(LocalCa::root_path(state.path(), "internal")).unwrap();
        let (certs, _) = read_certificates(&text).unwrap();
        certs.into_iter().map(|c| c.fingerprint).collect()
    }

    #[test]
    fn each_phase_follows_from_the_last_and_a_cut_step_is_finished() {
        let now = OffsetDateTime::now_utc();
        let (_dir, state) = setup(now);
        let live = state.path().join("live.pem");
        let lives = [("a", live.as_path())];
        let r = start(&state, "internal", now, DAY).unwrap();
        // A second rotation is refused while this one is under way.
        let again = start(&state, "internal", now, DAY).unwrap_err();
        assert!(matches!(again, Error::RotationUnderWay { .. }), "{again}");
        // Overlap: both roots trusted, the old one first (it signs).
        let steps = advance(&state, "internal", &lives, now).unwrap();
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(roots(&state), [r.old_root.clone(), r.new_root.clone()]);
        assert!(advance(&state, "internal", &lives, now).unwrap().is_empty());
        assert!(retiring(state.path(), "internal").is_none());

        // After the overlap: switched; the live leaf still chains to the old root.
        let later = now + DAY;
        advance(&state, "internal", &lives, later).unwrap();
        assert_eq!(
            read(state.path(), "internal").unwrap().unwrap().phase,
            Phase::Switched
        );
        assert_eq!(roots(&state), [r.new_root.clone(), r.old_root.clone()]);
        let old = retiring(state.path(), "internal").unwrap();
        assert_eq!(old.fingerprint, r.old_root);
        assert!(chains_to(&live, &old));

        // A crash cut the switch short: the old intermediate is back; the next pass
        // finishes the step before anything is issued.
        let next_inter =
            std::fs::read(state.join(&["ca", "internal", "next", "intermediate.pem"])).unwrap();
        state
            .write_file(
                &["ca", "internal"],
                "intermediate.pem",
                b"-----BEGIN CERTIFICATE-----\n",
                0o600,
                Durable::Now,
            )
            .unwrap();
        advance(&state, "internal", &lives, later).unwrap();
        let inter = std::fs::read(state.join(&["ca", "internal", "intermediate.pem"])).unwrap();
        assert_eq!(inter, next_inter);

        // New leaves chain to the new root; once the live one does, the old root retires.
        issue_to(&state, "live.pem", later);
        assert!(!chains_to(&live, &old));
        let steps = advance(&state, "internal", &lives, later).unwrap();
        assert!(steps.iter().any(|s| s.starts_with("retired")), "{steps:?}");
        assert_eq!(roots(&state), std::slice::from_ref(&r.new_root));
        assert_eq!(
            read(state.path(), "internal").unwrap().unwrap().phase,
            Phase::Done
        );
        assert!(!state.join(&["ca", "internal", "next"]).exists());
        // And a new rotation may start.
        start(&state, "internal", later, DAY).unwrap();
    }

    #[test]
    fn a_rotation_needs_the_ca_and_a_damaged_record_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let err = start(&state, "internal", now, DAY).unwrap_err();
        assert!(err.to_string().contains("does not exist yet"), "{err}");
        issue_to(&state, "live.pem", now);
        state
            .write_file(
                &["ca", "internal"],
                ROTATION_FILE,
                b"{not json",
                0o644,
                Durable::Now,
            )
            .unwrap();
        let err = advance(&state, "internal", &[], now).unwrap_err();
        assert!(
            err.to_string().contains("rotation.json does not read"),
            "{err}"
        );
    }

    #[test]
    fn the_bundle_is_written_when_it_differs_and_earlier_ones_are_kept() {
        let now = OffsetDateTime::now_utc();
        let (dir, state) = setup(now);
        let bundle = dir.path().join("bundle.pem");
        assert!(write_bundle(&state, "internal", &bundle, now).unwrap());
        assert!(!write_bundle(&state, "internal", &bundle, now).unwrap());
        std::fs::write(&bundle, "stale\n").unwrap();
        assert!(write_bundle(&state, "internal", &bundle, now).unwrap());
        let kept = std::fs::read_dir(state.join(&["ca", "internal", "bundles"]))
            .unwrap()
            .count();
        assert_eq!(kept, 1);
        // A device is not replaced.
        let err = write_bundle(&state, "internal", Path::new("/dev/null"), now).unwrap_err();
        assert!(err.to_string().contains("/dev/null"), "{err}");
    }
}
