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
//! - when `.live` is missing or dangling while a live path still links through it (someone
//!   removed it), puts it back on the newest generation whose files match its manifest;
//! - when `.live` does not exist otherwise, undoes an interrupted first deploy: removes all
//!   generations and the dangling links certkeeper had placed;
//! - removes `.tmp-*` leftovers of snapshots being taken or removed.

use std::fs;
use std::path::{Path, PathBuf};

use super::atomic;
use super::error::Result;
use super::live::{self, Entry, Layout};
use super::snapshot::Snapshots;
use certkeeper_base::text::sha256_hex;

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

    let mut live = layout.live_generation()?;
    if live.is_none_or(|n| !layout.generation_dir(n).is_dir())
        && let Some(n) = restorable(layout, live)?
    {
        // `.live` is gone or names a generation that is gone, while the live paths still
        // link through it: readers see no pair. The newest generation whose files match its
        // manifest (never one above what `.live` named: those were never committed) becomes
        // live again, instead of every generation being removed.
        let link = layout.live_link();
        let name = layout.generation_name(n);
        atomic::replace_symlink(Path::new(&name), &layout.temporary(&layout.dir), &link)?;
        out.warnings.push(format!(
            "{} was missing or named no generation; it names {name} again, the newest whole generation",
            link.display()
        ));
        live = Some(n);
    }

    match live {
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
                        certkeeper_base::fsutil::read_regular(
                            &path,
                            certkeeper_base::fsutil::MAX_FILE,
                        ),
                        certkeeper_base::fsutil::read_regular(
                            &layout.dir.join(&target),
                            certkeeper_base::fsutil::MAX_FILE,
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

/// The generation `.live` can be put back on when it is missing or dangling (`named`: what it
/// names, if anything) while a live path still links through it: the newest generation, not
/// above `named`, whose files match its own manifest. `None` when no live path links through
/// `.live` (an interrupted first deploy or adoption: nothing was ever live) or no generation
/// is whole.
fn restorable(layout: &Layout, named: Option<u64>) -> Result<Option<u64>> {
    let linked = layout
        .links()
        .iter()
        .any(|(path, target)| fs::read_link(path).is_ok_and(|t| &t == target));
    if !linked {
        return Ok(None);
    }
    for n in layout.generations()?.into_iter().rev() {
        if named.is_some_and(|m| n > m) {
            continue;
        }
        let dir = layout.generation_dir(n);
        let whole = live::read_generation_manifest(&dir).is_ok_and(|m| {
            m.files.entries().iter().all(|(file, digest)| {
                atomic::read_nofollow(&dir.join(file)).is_ok_and(|b| &sha256_hex(&b) == *digest)
            })
        });
        if whole {
            return Ok(Some(n));
        }
    }
    Ok(None)
}
