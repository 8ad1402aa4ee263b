//! certkeeper's lowest floor: helpers every other part may use, which use nothing of
//! certkeeper's.
//!
//! - [`text`]: untrusted text made safe to print, durations for humans, digests as hex,
//!   times as RFC 3339.
//! - [`fsutil`]: bounded reads of regular files, and what sits at a path certkeeper would
//!   write.
//! - [`perms`]: ownership and permissions of the files certkeeper trusts.

pub mod fsutil;
pub mod perms;
pub mod text;
