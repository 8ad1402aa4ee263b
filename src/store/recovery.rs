//! Recovery: finish or undo whatever an interrupted swap, rollback or prune left behind.
//!
//! The `.live` link is the only commit point, so recovery never has to guess which pair
//! won: the generation `.live` names is the live pair. Recovery then
//!
//! - removes `.certkeeper-<name>.tmp-*` links beside the live files;
//! - when `.live` exists, finishes placing the live paths as links through it (an
//!   interrupted first deploy or adoption: a path that still holds a plain file is replaced
//!   only when its content equals the live generation's, so nothing a reader sees changes),
//!   and removes every generation except the live one and the newest older one;
//! - when `.live` does not exist, undoes an interrupted first deploy: removes all
//!   generations and the dangling links certkeeper had placed;
//! - removes `.tmp-*` leftovers of snapshots being taken or removed.

use std::fs;
use std::path::PathBuf;

use super::atomic;
use super::error::Result;
use super::live::{Entry, Layout};
use super::snapshot::Snapshots;

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// Leftovers that were removed (temporary links, unused generations, partial
    /// snapshots).
    pub removed: Vec<PathBuf>,
    /// Live paths that were turned into links to finish an interrupted swap.
    pub completed: Vec<PathBuf>,
    /// An unfinished stage that was undone, said in words.
    pub undone: Option<String>,
    /// What an operator should know (a stage that could not be undone).
    pub warnings: Vec<String>,
}

impl Recovered {
    /// Whether there was nothing to do.
    pub fn is_clean(&self) -> bool {
        self.removed.is_empty()
            && self.completed.is_empty()
            && self.undone.is_none()
            && self.warnings.is_empty()
    }
}

pub(crate) fn recover(layout: &Layout, snapshots: &Snapshots) -> Result<Recovered> {
    let mut out = Recovered::default();
    for dir in layout.dirs() {
        let mut removed_here = false;
        for (path, kind) in layout.entries(&dir)? {
            if kind == Entry::Temporary {
                atomic::remove_tree(&path)?;
                out.removed.push(path);
                removed_here = true;
            }
        }
        if removed_here {
            atomic::sync_dir(&dir)?;
        }
    }

    match layout.live_generation()? {
        Some(live) if layout.generation_dir(live).is_dir() => {
            for (path, target) in layout.links() {
                if fs::read_link(&path).is_ok_and(|t| t == target) {
                    continue;
                }
                let unchanged = match fs::symlink_metadata(&path) {
                    Err(_) => true,
                    // A plain file left by an interrupted adoption has the same content as
                    // the generation made from it; anything else was written by someone
                    // else after us and is left for the next deploy to adopt.
                    Ok(_) => match (
                        crate::fsutil::read_regular(&path, crate::fsutil::MAX_FILE),
                        crate::fsutil::read_regular(
                            &layout.dir.join(&target),
                            crate::fsutil::MAX_FILE,
                        ),
                    ) {
                        (Ok(now), Ok(ours)) => now == ours,
                        _ => false,
                    },
                };
                if unchanged {
                    let tmp = layout.temporary(atomic::parent(&path));
                    atomic::replace_symlink(&target, &tmp, &path)?;
                    out.completed.push(path);
                }
            }
            let previous = layout
                .generations()?
                .into_iter()
                .filter(|&n| n < live)
                .max();
            let keep: Vec<u64> = std::iter::once(live).chain(previous).collect();
            out.removed.extend(layout.remove_generations_except(&keep)?);
        }
        Some(live) => {
            // `.live` names a generation that is gone: someone removed it. Keep every
            // older generation for inspection and only drop the ones never committed.
            let keep: Vec<u64> = layout
                .generations()?
                .into_iter()
                .filter(|&n| n <= live)
                .collect();
            out.removed.extend(layout.remove_generations_except(&keep)?);
        }
        None => {
            for (path, target) in layout.links() {
                if fs::read_link(&path).is_ok_and(|t| t == target) {
                    atomic::remove_tree(&path)?;
                    atomic::sync_dir(atomic::parent(&path))?;
                    out.removed.push(path);
                }
            }
            out.removed.extend(layout.remove_generations_except(&[])?);
        }
    }

    out.removed.extend(snapshots.remove_leftovers()?);
    Ok(out)
}
