//! Choosing the snapshot a rollback restores.
//!
//! With an explicit id, that snapshot, refused when it does not verify. By default, the
//! newest snapshot whose leaf differs from the live leaf and whose SHA-256 verifies;
//! corrupt snapshots on the way are skipped and named in the error when nothing is left.
//! The restore itself is [`Locked::rollback`](super::Locked::rollback).

use super::error::{Error, Result};
use super::snapshot::SnapshotInfo;

/// Picks the snapshot to restore from `snapshots` (newest first, as listed).
///
/// `live_fingerprint` is the live leaf's fingerprint, `None` when nothing is live.
pub(crate) fn choose(
    name: &str,
    snapshots: &[SnapshotInfo],
    live_fingerprint: Option<&str>,
    to: Option<&str>,
) -> Result<SnapshotInfo> {
    if let Some(id) = to {
        let snap =
            snapshots
                .iter()
                .find(|s| s.id == id)
                .ok_or_else(|| Error::SnapshotNotFound {
                    name: name.to_owned(),
                    id: id.to_owned(),
                })?;
        // An intact snapshot of live files that had been edited in place may be restored
        // when asked for by id; a corrupt one never.
        if !snap.intact {
            return Err(Error::SnapshotCorrupt {
                name: name.to_owned(),
                id: id.to_owned(),
                problem: snap
                    .problem
                    .clone()
                    .unwrap_or_else(|| "does not verify".to_owned()),
            });
        }
        return Ok(snap.clone());
    }
    let mut corrupt = Vec::new();
    for snap in snapshots {
        if snap.fingerprint.is_some() && snap.fingerprint.as_deref() == live_fingerprint {
            continue;
        }
        if !snap.verified {
            corrupt.push(snap.id.clone());
            continue;
        }
        return Ok(snap.clone());
    }
    Err(Error::NoRollbackTarget {
        name: name.to_owned(),
        corrupt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, fingerprint: &str, verified: bool) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            created: None,
            not_after: None,
            fingerprint: Some(fingerprint.into()),
            files: None,
            linked: true,
            verified,
            intact: verified,
            problem: (!verified).then(|| "privkey.pem differs".to_owned()),
        }
    }

    #[test]
    fn default_skips_the_live_leaf_and_corrupt_snapshots() {
        let list = [
            snap("5", "live", true),
            snap("4", "b", false),
            snap("3", "c", true),
        ];
        assert_eq!(
            choose("www", &list, Some("live"), None).expect("target").id,
            "3"
        );
        // Nothing live: the newest good one.
        assert_eq!(choose("www", &list, None, None).expect("target").id, "5");
    }

    #[test]
    fn default_fails_loudly_when_nothing_is_left() {
        let list = [snap("5", "live", true), snap("4", "b", false)];
        let err = choose("www", &list, Some("live"), None).expect_err("no target");
        match err {
            Error::NoRollbackTarget { corrupt, .. } => assert_eq!(corrupt, ["4"]),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn explicit_id_must_exist_and_verify() {
        let list = [snap("5", "live", true), snap("4", "b", false)];
        assert_eq!(
            choose("www", &list, Some("live"), Some("5"))
                .expect("same leaf allowed")
                .id,
            "5"
        );
        assert!(matches!(
            choose("www", &list, Some("live"), Some("4")),
            Err(Error::SnapshotCorrupt { .. })
        ));
        assert!(matches!(
            choose("www", &list, Some("live"), Some("9")),
            Err(Error::SnapshotNotFound { .. })
        ));
    }
}
