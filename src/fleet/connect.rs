//! From the validated `fleet:` section to a connection to the fleet's etcd: the options of
//! the `certkeeper_fleet` client (endpoints, TLS files, the password read from its
//! `password_env` or `password_file`), and one error type that names the config key at
//! fault and never carries the password.

use std::time::Duration;

use certkeeper_fleet::{Fleet, Options, Password};

use crate::config;

/// How long connecting and each request to etcd may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Dialling a member.
    pub connect: Duration,
    /// One request (retried within this time while no member can apply it).
    pub request: Duration,
    /// Whether an open link pings its member (see [`Options::pings`]): not for the daemon's
    /// watches, which must let an idle daemon sleep.
    pub pings: bool,
}

impl Timeouts {
    /// The client's defaults: what a pass can afford to wait.
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(5),
        pings: true,
    };

    /// The daemon's watches: the default timeouts, and no pings while the watches wait.
    pub const WATCH: Timeouts = Timeouts {
        pings: false,
        ..Timeouts::DEFAULT
    };

    /// Timeouts that fit a total of `budget` (a monitoring command): a third to dial, the
    /// rest for the requests.
    pub fn within(budget: Duration) -> Timeouts {
        Timeouts {
            connect: budget / 3,
            request: budget - budget / 3,
            pings: true,
        }
    }
}

/// Why there is no connection to the fleet's etcd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The etcd password could not be read; `reason` names the variable or file, never
    /// the value.
    #[error("{key}: {reason}")]
    Password {
        /// `fleet.etcd.password_env` or `fleet.etcd.password_file`.
        key: &'static str,
        /// Why (not set, empty, unreadable).
        reason: String,
    },
    /// A setting the client refuses (an endpoint, a TLS file, a name).
    #[error("{key}: {source}")]
    Setting {
        /// The config key at fault, as `fleet.etcd.ca_file`.
        key: &'static str,
        /// What the client said.
        #[source]
        source: certkeeper_fleet::Error,
    },
    /// etcd did not answer (no member reachable, no quorum) or refused the login.
    #[error("fleet {fleet}: {}", brief(source))]
    Etcd {
        /// The fleet's name.
        fleet: String,
        /// What the client said.
        #[source]
        source: certkeeper_fleet::Error,
    },
}

impl ConnectError {
    /// The config key at fault, when the config (or the environment it names) is.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConnectError::Password { key, .. } | ConnectError::Setting { key, .. } => Some(key),
            ConnectError::Etcd { .. } => None,
        }
    }
}

/// The client's options for `fleet` with `timeouts`; reads the etcd password.
pub fn options(fleet: &config::Fleet, timeouts: Timeouts) -> Result<Options, ConnectError> {
    let mut o = Options::new(&fleet.name, &fleet.host, fleet.etcd.endpoints.clone());
    o.ca_file = fleet.etcd.ca_file.clone();
    if let Some(id) = &fleet.etcd.client_identity {
        o.cert_file = Some(id.cert_file.clone());
        o.key_file = Some(id.key_file.clone());
    }
    if let Some(auth) = &fleet.etcd.auth {
        let key = match auth.password {
            config::SecretSource::Env(_) => "fleet.etcd.password_env",
            config::SecretSource::File(_) => "fleet.etcd.password_file",
        };
        let secret = auth
            .password
            .resolve()
            .map_err(|reason| ConnectError::Password { key, reason })?;
        o.username = Some(auth.username.clone());
        o.password = Some(Password(secret.expose().to_owned()));
    }
    o.lease_ttl = fleet.lease_ttl;
    o.connect_timeout = timeouts.connect;
    o.request_timeout = timeouts.request;
    o.pings = timeouts.pings;
    Ok(o)
}

/// Connects to the fleet's etcd. Members are dialled lazily, so this succeeds without a
/// quorum unless a username must log in first; [`Fleet::probe`] tells whether etcd answers.
pub async fn connect(fleet: &config::Fleet, timeouts: Timeouts) -> Result<Fleet, ConnectError> {
    let options = options(fleet, timeouts)?;
    Fleet::connect(&options)
        .await
        .map_err(|source| match setting_key(&source) {
            Some(key) => ConnectError::Setting { key, source },
            None => ConnectError::Etcd {
                fleet: fleet.name.clone(),
                source,
            },
        })
}

/// The client's error on one short line: for a failed request, its operation and the
/// deepest cause (`etcd connect failed: Connection refused (os error 111)`), not the
/// transport's nested debug form.
pub fn brief(e: &certkeeper_fleet::Error) -> String {
    let certkeeper_fleet::Error::Etcd { op, source } = e else {
        return e.to_string();
    };
    let mut deepest: &dyn std::error::Error = source;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    crate::text::escape_line(&format!(
        "etcd {op} failed: {}",
        messages(&deepest.to_string())
    ))
}

/// The `message: "…"` parts of a gRPC status as the client displays it, outermost first
/// (`tcp connect error: Connection refused`); the text before any `, source:` otherwise.
fn messages(text: &str) -> String {
    let mut found: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("message: \"") {
        rest = &rest[at + "message: \"".len()..];
        let Some(end) = rest.find('"') else { break };
        if !found.contains(&&rest[..end]) {
            found.push(&rest[..end]);
        }
        rest = &rest[end..];
    }
    if found.is_empty() {
        text.split(", source:").next().unwrap_or(text).to_owned()
    } else {
        found.join(": ")
    }
}

/// The config key behind an error of the client that no etcd answer caused.
fn setting_key(e: &certkeeper_fleet::Error) -> Option<&'static str> {
    use certkeeper_fleet::Error as E;
    Some(match e {
        E::InvalidName {
            what: "fleet name", ..
        } => "fleet.name",
        E::InvalidName { .. } => "fleet.host",
        E::InvalidEndpoint { .. } => "fleet.etcd.endpoints",
        E::ReadFile {
            what: "CA file", ..
        } => "fleet.etcd.ca_file",
        E::ReadFile {
            what: "client certificate",
            ..
        } => "fleet.etcd.cert_file",
        E::ReadFile { .. } => "fleet.etcd.key_file",
        E::Tls(_) => "fleet.etcd.ca_file",
        E::Auth(_) => "fleet.etcd.username",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> config::Fleet {
        config::Fleet {
            name: "web-pool".into(),
            host: "web1".into(),
            etcd: config::Etcd {
                endpoints: vec!["http://127.0.0.1:1".into()],
                ca_file: None,
                client_identity: None,
                auth: Some(config::EtcdAuth {
                    username: "certkeeper".into(),
                    password: config::SecretSource::Env("CERTKEEPER_TEST_FLEET_PW_UNSET".into()),
                }),
            },
            seal_key_file: "fleet.key".into(),
            lease_ttl: Duration::from_secs(15),
            canary: 1,
            max_failures: 1,
        }
    }

    #[test]
    fn the_password_comes_from_its_source_and_errors_name_the_key() {
        let err = options(&fleet(), Timeouts::DEFAULT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "fleet.etcd.password_env: environment variable CERTKEEPER_TEST_FLEET_PW_UNSET is not set"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-pw\n").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut f = fleet();
        f.etcd.auth.as_mut().unwrap().password = config::SecretSource::File(file);
        let o = options(&f, Timeouts::within(Duration::from_secs(3))).unwrap();
        assert_eq!(o.password.as_ref().unwrap().0, "s3cret-pw");
        assert_eq!(o.username.as_deref(), Some("certkeeper"));
        assert_eq!(o.connect_timeout, Duration::from_secs(1));
        assert_eq!(o.request_timeout, Duration::from_secs(2));
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn grpc_statuses_read_as_their_messages() {
        let t = r#"grpc request error: code: 'The service is currently unavailable', message: "tcp connect error", source: tonic::transport::Error(Transport, ConnectError(ConnectError("tcp connect error", 127.0.0.1:1, Os { code: 111, kind: ConnectionRefused, message: "Connection refused" })))"#;
        assert_eq!(messages(t), "tcp connect error: Connection refused");
        assert_eq!(
            messages("transport error: x, source: y"),
            "transport error: x"
        );
        assert_eq!(messages("plain"), "plain");
    }

    #[tokio::test]
    async fn refused_settings_name_their_key() {
        let mut f = fleet();
        f.etcd.auth = None;
        f.etcd.ca_file = Some("/nonexistent/etcd-ca.pem".into());
        f.etcd.endpoints = vec!["https://127.0.0.1:1".into()];
        let err = connect(&f, Timeouts::DEFAULT).await.err().unwrap();
        assert_eq!(err.key(), Some("fleet.etcd.ca_file"), "{err}");
        assert!(
            err.to_string().starts_with(
                "fleet.etcd.ca_file: reading the etcd CA file /nonexistent/etcd-ca.pem"
            ),
            "{err}"
        );
    }
}
