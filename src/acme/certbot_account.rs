//! Using an account certbot registered (`certbot_account:` of an ACME issuer), read only.
//!
//! certbot's account keys are RSA JSON web keys; the protocol library signs with P-256 only.
//! So the account is opened with a throwaway P-256 key, and every request on its way out is
//! signed again with certbot's RSA key (RS256, RFC 7518 §3.3) in the HTTP layer: the header
//! keeps the account URL (`kid`) and the nonce, only `alg` and the signature change. The DNS-01
//! values use the RSA key's thumbprint (RFC 7638). Nothing is written under certbot's
//! directory, and the key never reaches a log or an error.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Request;
use instant_acme::{AccountCredentials, BodyWrapper, BytesResponse, HttpClient};

use super::Error;

/// certbot's account: its URL and RSA key.
pub(crate) struct CertbotAccount {
    /// The account's URL at the CA.
    pub(crate) url: String,
    key: RsaKeyPair,
    thumbprint: String,
}

impl CertbotAccount {
    /// Reads `dir/regr.json` and `dir/private_key.json`.
    pub(crate) fn read(dir: &Path) -> Result<CertbotAccount, Error> {
        let account = crate::certbot::read_account(dir).map_err(|e| file_error(dir, e))?;
        let key_path = dir.join("private_key.json");
        let jwk = crate::certbot::read_json(&key_path).map_err(|e| file_error(dir, e))?;
        let part = |name: &str| -> Result<Vec<u8>, Error> {
            jwk.get(name)
                .and_then(|v| v.as_str())
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::AccountFile {
                    path: key_path.clone(),
                    reason: format!("the RSA key lacks its `{name}` part"),
                })
        };
        let (n, e) = (part("n")?, part("e")?);
        let mut fields = vec![vec![0u8], n.clone(), e.clone()];
        for name in ["d", "p", "q", "dp", "dq", "qi"] {
            fields.push(part(name)?);
        }
        let key = RsaKeyPair::from_der(&pkcs1(&fields)).map_err(|_| Error::AccountFile {
            path: key_path.clone(),
            reason: "not a usable RSA key".into(),
        })?;
        // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
        let canonical = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(&e),
            URL_SAFE_NO_PAD.encode(&n)
        );
        let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ));
        Ok(CertbotAccount {
            url: account.url,
            key,
            thumbprint,
        })
    }

    /// Credentials for the protocol library: the account URL with a throwaway P-256 key,
    /// whose signatures [`Resign`] replaces.
    pub(crate) fn credentials(&self, directory: &str) -> Result<AccountCredentials, Error> {
        let (_, pkcs8) = instant_acme::Key::generate_pkcs8().map_err(|e| Error::AccountFile {
            path: PathBuf::from("certbot_account"),
            reason: format!("cannot create a signing placeholder: {e}"),
        })?;
        let json = serde_json::json!({
            "id": self.url,
            "key_pkcs8": URL_SAFE_NO_PAD.encode(pkcs8.secret_pkcs8_der()),
            "directory": directory,
        });
        serde_json::from_value(json).map_err(|e| Error::AccountFile {
            path: PathBuf::from("certbot_account"),
            reason: format!("cannot build the account: {e}"),
        })
    }

    /// The DNS-01 TXT value for `token` (RFC 8555 §8.1 and §8.4) with this account's key.
    pub(crate) fn dns_value(&self, token: &str) -> String {
        let authorization = format!("{token}.{}", self.thumbprint);
        URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            authorization.as_bytes(),
        ))
    }

    /// Signs a flattened JWS body again with the RSA key; `None` when `body` is not one.
    fn resign(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut jws: serde_json::Value = serde_json::from_slice(body).ok()?;
        let protected = jws.get("protected")?.as_str()?;
        let payload = jws.get("payload")?.as_str()?.to_owned();
        let mut header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(protected).ok()?).ok()?;
        // Only requests signed by the account (`kid`) are ours to sign; anything with an
        // embedded key (a new account, a key change) is left as it is.
        header.get("kid")?;
        header["alg"] = "RS256".into();
        let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?);
        let input = format!("{protected}.{payload}");
        let mut signature = vec![0; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.key
            .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
            .ok()?;
        jws["protected"] = protected.into();
        jws["signature"] = URL_SAFE_NO_PAD.encode(&signature).into();
        serde_json::to_vec(&jws).ok()
    }
}

/// The HTTP client that signs each account request with certbot's key before `inner` sends it.
#[derive(Clone)]
pub(crate) struct Resign<H> {
    pub(crate) inner: H,
    pub(crate) account: Arc<CertbotAccount>,
}

impl<H: HttpClient + Clone> HttpClient for Resign<H> {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let inner = self.inner.clone();
        let account = self.account.clone();
        Box::pin(async move {
            if req.method() != http::Method::POST {
                return inner.request(req).await;
            }
            let (parts, body) = req.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map_err(|e| instant_acme::Error::Other(e.into()))?
                .to_bytes();
            let body = account.resign(&bytes).unwrap_or_else(|| bytes.to_vec());
            inner
                .request(Request::from_parts(parts, BodyWrapper::from(body)))
                .await
        })
    }
}

/// A PKCS#1 `RSAPrivateKey` (RFC 8017 §A.1.2): a DER SEQUENCE of unsigned INTEGERs.
fn pkcs1(fields: &[Vec<u8>]) -> Vec<u8> {
    let mut content = Vec::new();
    for f in fields {
        let trimmed: &[u8] = match f.iter().position(|b| *b != 0) {
            Some(i) => &f[i..],
            None => &[0],
        };
        let mut int = Vec::with_capacity(trimmed.len() + 1);
        // A leading 1 bit would make the INTEGER negative.
        if trimmed[0] & 0x80 != 0 {
            int.push(0);
        }
        int.extend_from_slice(trimmed);
        content.push(0x02);
        der_len(&mut content, int.len());
        content.extend_from_slice(&int);
    }
    let mut out = vec![0x30];
    der_len(&mut out, content.len());
    out.extend_from_slice(&content);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    out.push(0x80 | bytes.len() as u8);
    out.extend_from_slice(&bytes);
}

fn file_error(dir: &Path, e: crate::certbot::Error) -> Error {
    Error::AccountFile {
        path: dir.to_owned(),
        reason: format!("certbot's account: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_and_integers() {
        let mut v = Vec::new();
        der_len(&mut v, 5);
        assert_eq!(v, [5]);
        let mut v = Vec::new();
        der_len(&mut v, 300);
        assert_eq!(v, [0x82, 1, 44]);
        assert_eq!(
            pkcs1(&[vec![0], vec![0x80]]),
            [0x30, 7, 2, 1, 0, 2, 2, 0, 0x80]
        );
    }
}
