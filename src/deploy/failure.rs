//! Why a deploy did not go through: the typed cause each refusal keeps, from the store, the
//! reload command or the verification, until it is shown (a CLI line, a log line, an alert,
//! a metric label), where it is rendered once.

use std::sync::Arc;

use super::reload::CommandError;
use super::verify::VerifyError;
use crate::state::CauseKind;
use crate::store;
use crate::x509::FileError;

/// Why new material was refused after the swap, or could not be swapped in.
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
pub enum Failure {
    /// Staging the new pair failed; nothing was swapped.
    #[error("deploy: {0}")]
    Stage(Arc<store::Error>),
    /// The reload command failed.
    #[error("reload failed: {0}")]
    Reload(Arc<CommandError>),
    /// The reload command changed what was deployed (removed the live files, or state_dir).
    #[error("the reload command changed what certkeeper deployed: {0}")]
    Damaged(store::Damaged),
    /// The service does not serve the new pair, or its health command failed.
    #[error("verify failed: {0}")]
    Verify(Arc<VerifyError>),
    /// The live leaf could not be read back to be verified.
    #[error("{0}")]
    Live(Arc<FileError>),
    /// Committing the swap (removing its journal) failed.
    #[error("commit: {0}")]
    Commit(Arc<store::Error>),
}

impl Failure {
    /// The kind alerts, metrics and backoff see.
    pub fn kind(&self) -> CauseKind {
        match self {
            Failure::Stage(_) | Failure::Commit(_) | Failure::Live(_) => CauseKind::Deploy,
            Failure::Reload(_) | Failure::Damaged(_) => CauseKind::Reload,
            Failure::Verify(_) => CauseKind::Verify,
        }
    }
}
