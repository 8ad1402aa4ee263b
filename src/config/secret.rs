//! Secrets: where they come from (`*_env` or `*_file`, never inline), and a holder whose
//! `Debug` and `Display` never show the value.

use std::fmt;
use std::path::PathBuf;

/// Where a secret is read from. Validation records the source only; the value is read when
/// a command needs it ([`SecretSource::resolve`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable's name.
    Env(String),
    /// A file whose content (trailing newline removed) is the secret.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret. The error names the variable or file, never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
                Ok(_) => Err(format!("environment variable {var} is empty")),
                Err(_) => Err(format!("environment variable {var} is not set")),
            },
            SecretSource::File(path) => {
                crate::perms::check_trusted_file(path, "secret file", true)?;
                match crate::fsutil::read_regular_text(path, crate::fsutil::MAX_FILE) {
                    Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
                    Ok(_) => Err(format!("secret file {} is empty", path.display())),
                    Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
                }
            }
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "env {var}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A secret value. `Debug` and `Display` print `<redacted>`; use [`Secret::expose`] at the
/// one place that must send it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Holds `value` as a secret (a webhook URL written in the config, which may carry a
    /// token, is treated as one).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, for the request that needs it. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "hunter2-very-secret\n").unwrap();
        let secret = SecretSource::File(path).resolve().unwrap();
        assert_eq!(secret.expose(), "hunter2-very-secret");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
    }

    #[test]
    fn missing_sources_are_named() {
        let err = SecretSource::Env("CERTKEEPER_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert_eq!(
            err,
            "environment variable CERTKEEPER_TEST_SURELY_UNSET is not set"
        );
        let err = SecretSource::File("/nonexistent/certkeeper/token".into())
            .resolve()
            .unwrap_err();
        assert!(err.starts_with("cannot read secret file /nonexistent/certkeeper/token"));
    }
}
