//! ACME Renewal Information (RFC 9773): the CA's suggested window for one certificate, as
//! fetched by [`super::Acme::renewal_window`]. What the window means for when a certificate
//! is due is decided in [`crate::schedule`].

use std::time::Duration;

use time::OffsetDateTime;

/// The CA's suggested renewal window for one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this.
    pub start: OffsetDateTime,
    /// Renew no later than this.
    pub end: OffsetDateTime,
    /// A page explaining the window, when the CA gives one (e.g. after an incident).
    pub explanation_url: Option<String>,
    /// When the CA wants to be asked again.
    pub retry_after: Duration,
}
