//! ACME problem types (RFC 8555 section 6.7): what a CA's problem document says went wrong,
//! as an enum, so that callers match on it instead of comparing URNs.

use std::fmt;

/// The `type` of an ACME problem document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProblemType {
    /// `accountDoesNotExist`
    AccountDoesNotExist,
    /// `alreadyRevoked`
    AlreadyRevoked,
    /// `badCSR`
    BadCsr,
    /// `badNonce`
    BadNonce,
    /// `badPublicKey`
    BadPublicKey,
    /// `badRevocationReason`
    BadRevocationReason,
    /// `badSignatureAlgorithm`
    BadSignatureAlgorithm,
    /// `caa`
    Caa,
    /// `compound`
    Compound,
    /// `connection`
    Connection,
    /// `dns`
    Dns,
    /// `externalAccountRequired`
    ExternalAccountRequired,
    /// `incorrectResponse`
    IncorrectResponse,
    /// `invalidContact`
    InvalidContact,
    /// `malformed`
    Malformed,
    /// `orderNotReady`
    OrderNotReady,
    /// `rateLimited`
    RateLimited,
    /// `rejectedIdentifier`
    RejectedIdentifier,
    /// `serverInternal`
    ServerInternal,
    /// `tls`
    Tls,
    /// `unauthorized`
    Unauthorized,
    /// `unsupportedContact`
    UnsupportedContact,
    /// `unsupportedIdentifier`
    UnsupportedIdentifier,
    /// `userActionRequired`
    UserActionRequired,
    /// A type RFC 8555 does not list (another namespace, or a later RFC's), as sent.
    Other(String),
}

/// The namespace of RFC 8555's problem types.
pub const ACME_ERROR_NS: &str = "urn:ietf:params:acme:error:";

impl ProblemType {
    /// The type of a problem document's `type` field (`urn:ietf:params:acme:error:...`).
    pub fn parse(urn: &str) -> ProblemType {
        let Some(name) = urn.strip_prefix(ACME_ERROR_NS) else {
            return ProblemType::Other(urn.to_owned());
        };
        KNOWN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| ProblemType::Other(urn.to_owned()))
    }

    /// The type's name within RFC 8555's namespace (`rateLimited`), or the whole type as
    /// sent for one it does not list.
    pub fn name(&self) -> &str {
        match self {
            ProblemType::Other(urn) => urn,
            known => KNOWN
                .iter()
                .find(|(_, t)| t == known)
                .map(|(n, _)| *n)
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for ProblemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemType::Other(urn) => f.write_str(urn),
            known => write!(f, "{ACME_ERROR_NS}{}", known.name()),
        }
    }
}

const KNOWN: &[(&str, ProblemType)] = &[
    ("accountDoesNotExist", ProblemType::AccountDoesNotExist),
    ("alreadyRevoked", ProblemType::AlreadyRevoked),
    ("badCSR", ProblemType::BadCsr),
    ("badNonce", ProblemType::BadNonce),
    ("badPublicKey", ProblemType::BadPublicKey),
    ("badRevocationReason", ProblemType::BadRevocationReason),
    ("badSignatureAlgorithm", ProblemType::BadSignatureAlgorithm),
    ("caa", ProblemType::Caa),
    ("compound", ProblemType::Compound),
    ("connection", ProblemType::Connection),
    ("dns", ProblemType::Dns),
    (
        "externalAccountRequired",
        ProblemType::ExternalAccountRequired,
    ),
    ("incorrectResponse", ProblemType::IncorrectResponse),
    ("invalidContact", ProblemType::InvalidContact),
    ("malformed", ProblemType::Malformed),
    ("orderNotReady", ProblemType::OrderNotReady),
    ("rateLimited", ProblemType::RateLimited),
    ("rejectedIdentifier", ProblemType::RejectedIdentifier),
    ("serverInternal", ProblemType::ServerInternal),
    ("tls", ProblemType::Tls),
    ("unauthorized", ProblemType::Unauthorized),
    ("unsupportedContact", ProblemType::UnsupportedContact),
    ("unsupportedIdentifier", ProblemType::UnsupportedIdentifier),
    ("userActionRequired", ProblemType::UserActionRequired),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_and_unknown_ones_are_kept() {
        for (name, t) in KNOWN {
            let urn = format!("{ACME_ERROR_NS}{name}");
            assert_eq!(&ProblemType::parse(&urn), t);
            assert_eq!(t.to_string(), urn);
        }
        let other = "urn:ietf:params:acme:error:somethingNew";
        assert_eq!(
            ProblemType::parse(other),
            ProblemType::Other(other.to_owned())
        );
        assert_eq!(ProblemType::parse(other).to_string(), other);
        assert_eq!(
            ProblemType::parse("about:blank"),
            ProblemType::Other("about:blank".into())
        );
    }
}
