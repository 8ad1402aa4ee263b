//! Issuers: where new certificates come from. The built-in CA lives here; ACME orders are in
//! `crate::acme`.

pub mod local_ca;
