//! The ACME account of one issuer: loaded from `state_dir/accounts/<issuer>/account.json`
//! (file 0600, directories 0700) or created once (contact, external account binding) and
//! stored there. The file holds the account's private key; its content never reaches a log
//! or an error message.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use zeroize::Zeroizing;

use super::certbot_account::{CertbotAccount, Resign};
use super::http::Http;
use super::retry::{self, Backoff};
use super::{Error, acme_error};
use crate::config::AcmeIssuer;
use crate::store::{Durable, StateDir};

/// Where an issuer's account lives under `state_dir`.
pub fn account_path(state_dir: &Path, issuer_name: &str) -> PathBuf {
    state_dir
        .join("accounts")
        .join(issuer_name)
        .join(ACCOUNT_FILE)
}

/// An account ready to use, and whether it was created just now.
pub(crate) struct Opened {
    pub(crate) account: Account,
    pub(crate) created: bool,
    pub(crate) file: Option<PathBuf>,
    /// certbot's account, when the issuer names one (its key signs every request).
    pub(crate) certbot: Option<Arc<CertbotAccount>>,
    /// The account's credentials (JSON, with its private key), for a fleet's order record;
    /// `None` for certbot's account, which stays where certbot keeps it.
    pub(crate) credentials: Option<Zeroizing<Vec<u8>>>,
}

/// Loads the stored account, or creates one (stored when `state_dir` is writable).
pub(crate) async fn open(
    issuer_name: &str,
    cfg: &AcmeIssuer,
    state_dir: &StateDir,
    http: &Http,
    backoff: &Backoff,
) -> Result<Opened, Error> {
    check_issuer_name(issuer_name)?;
    if let Some(dir) = &cfg.certbot_account {
        let certbot = Arc::new(CertbotAccount::read(dir)?);
        let http = Resign {
            inner: http.clone(),
            account: certbot.clone(),
        };
        let credentials = certbot.credentials(&cfg.directory)?;
        let account = retry::retrying!(backoff, "load certbot's account", {
            let credentials = clone_credentials(&credentials)?;
            Account::builder_with_http(Box::new(http.clone()))
                .from_credentials(credentials)
                .await
        })
        .map_err(|e| acme_error("load certbot's account", e))?;
        tracing::debug!(
            issuer = issuer_name,
            account = account.id(),
            "Using certbot's ACME account."
        );
        return Ok(Opened {
            account,
            created: false,
            file: Some(dir.clone()),
            certbot: Some(certbot),
            credentials: None,
        });
    }
    let path = account_path(state_dir.path(), issuer_name);
    let persist = state_dir.is_writable();
    if let Some(credentials) = read(&path, &cfg.directory)? {
        let shared = serde_json::to_vec(&credentials).ok().map(Zeroizing::new);
        let account = retry::retrying!(backoff, "load account", {
            let credentials = clone_credentials(&credentials)?;
            Account::builder_with_http(Box::new(http.clone()))
                .from_credentials(credentials)
                .await
        })
        .map_err(|e| acme_error("load account", e))?;
        tracing::debug!(
            issuer = issuer_name,
            account = account.id(),
            "Using stored ACME account."
        );
        return Ok(Opened {
            account,
            created: false,
            file: Some(path),
            certbot: None,
            credentials: shared,
        });
    }

    let eab = match &cfg.eab {
        Some(eab) => {
            let secret = eab.hmac_key.resolve().map_err(Error::Eab)?;
            let key = decode_hmac(secret.expose()).ok_or_else(|| {
                Error::Eab(format!(
                    "the hmac key from {} is not base64url; paste it exactly as the CA gave it",
                    eab.hmac_key
                ))
            })?;
            Some(ExternalAccountKey::new(eab.key_id.clone(), &key))
        }
        None => None,
    };
    let contact: Vec<&str> = cfg.contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = retry::retrying!(backoff, "create account", {
        Account::builder_with_http(Box::new(http.clone()))
            .create(&new, cfg.directory.clone(), eab.as_ref())
            .await
    })
    .map_err(|e| acme_error("create account", e))?;
    tracing::info!(
        issuer = issuer_name,
        account = account.id(),
        stored = persist,
        "Created ACME account."
    );
    let shared = serde_json::to_vec(&credentials).ok().map(Zeroizing::new);
    if persist {
        let json = serde_json::to_vec_pretty(&credentials)
            .map_err(|e| file_error(&path, format!("cannot encode account: {e}")))?;
        state_dir
            .write_file(
                &["accounts", issuer_name],
                ACCOUNT_FILE,
                &json,
                0o600,
                Durable::Now,
            )
            .map_err(|e| file_error(&path, format!("cannot write: {e}")))?;
    }
    Ok(Opened {
        account,
        created: true,
        file: persist.then_some(path),
        certbot: None,
        credentials: shared,
    })
}

/// Reads the stored credentials; `None` when there is no file yet.
fn read(path: &Path, directory: &str) -> Result<Option<AccountCredentials>, Error> {
    let text = match crate::fsutil::read_regular_text(path, crate::fsutil::MAX_FILE) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, format!("cannot read: {e}"))),
    };
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "ACME account file is readable by others; it should be 0600.");
    }
    // The stored directory must be the configured one: an account belongs to one CA.
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| file_error(path, format!("not an account file: {e}")))?;
    let stored = value.get("directory").and_then(|d| d.as_str());
    if stored != Some(directory) {
        return Err(Error::AccountDirectory {
            path: path.to_owned(),
            stored: stored.unwrap_or("an unknown directory").to_owned(),
            configured: directory.to_owned(),
        });
    }
    let credentials = serde_json::from_value(value)
        .map_err(|e| file_error(path, format!("not an account file: {e}")))?;
    Ok(Some(credentials))
}

/// Issuer names become a directory name: refuse anything that could leave `accounts/`.
fn check_issuer_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match ok {
        true => Ok(()),
        false => Err(Error::IssuerName {
            name: name.to_owned(),
        }),
    }
}

/// EAB HMAC keys are base64url (RFC 8555 §7.3.4); some CAs hand them out padded.
fn decode_hmac(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
        .filter(|k| !k.is_empty())
}

/// The account of an order in flight that another process placed, from its credentials
/// (JSON); `None`, with why, when they are not an account of `directory`.
pub(crate) async fn from_shared(
    json: &[u8],
    directory: &str,
    http: &Http,
    backoff: &Backoff,
) -> Result<Account, String> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|_| "the recorded account does not read".to_owned())?;
    if value.get("directory").and_then(|d| d.as_str()) != Some(directory) {
        return Err("the recorded account belongs to another CA directory".into());
    }
    let credentials: AccountCredentials = serde_json::from_value(value)
        .map_err(|_| "the recorded account does not read".to_owned())?;
    retry::retrying!(backoff, "load the recorded account", {
        let credentials = clone_credentials(&credentials)?;
        Account::builder_with_http(Box::new(http.clone()))
            .from_credentials(credentials)
            .await
    })
    .map_err(|e| acme_error("load the recorded account", e).to_string())
}

/// `AccountCredentials` is not `Clone`; a round trip through JSON copies it for a retry.
fn clone_credentials(c: &AccountCredentials) -> Result<AccountCredentials, instant_acme::Error> {
    Ok(serde_json::from_value(serde_json::to_value(c)?)?)
}

fn file_error(path: &Path, reason: String) -> Error {
    Error::AccountFile {
        path: path.to_owned(),
        reason,
    }
}

const ACCOUNT_FILE: &str = "account.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_names_cannot_escape_the_accounts_directory() {
        for bad in ["", "..", ".hidden", "a/b", "../x", "a b"] {
            assert!(check_issuer_name(bad).is_err(), "{bad:?}");
        }
        for good in ["letsencrypt", "le-staging", "zero_ssl", "ca.internal"] {
            assert!(check_issuer_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn hmac_keys_decode_padded_or_not() {
        assert_eq!(decode_hmac("AAEC"), Some(vec![0, 1, 2]));
        assert_eq!(decode_hmac("AAECAw"), Some(vec![0, 1, 2, 3]));
        assert_eq!(decode_hmac("AAECAw=="), Some(vec![0, 1, 2, 3]));
        assert_eq!(decode_hmac("not base64!"), None);
        assert_eq!(decode_hmac(""), None);
    }

    #[test]
    fn a_file_for_another_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.json");
        fs::write(
            &path,
            r#"{"id":"https://a.test/acct/1","key_pkcs8":"AA","directory":"https://a.test/dir"}"#,
        )
        .unwrap();
        let Err(err) = read(&path, "https://b.test/dir") else {
            panic!("a foreign account file was accepted");
        };
        assert!(matches!(err, Error::AccountDirectory { .. }), "{err:?}");
        assert!(err.to_string().contains("https://a.test/dir"), "{err}");
        assert!(matches!(
            read(&dir.path().join("none.json"), "https://b.test/dir"),
            Ok(None)
        ));
    }
}
