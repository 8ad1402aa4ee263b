//! Validation of the `fleet:` section: names that become etcd key segments, etcd's
//! endpoints and credentials, and the bounds of the election and the canary.

use yaml_serde::Value;

use super::super::fleet::{
    ClientIdentity, DEFAULT_CANARY, DEFAULT_LEASE_TTL, DEFAULT_MAX_FAILURES, Etcd, EtcdAuth, Fleet,
    MAX_FLEET_HOSTS, MAX_FLEET_ID, MAX_LEASE_TTL, MIN_LEASE_TTL, hostname, valid_fleet_id,
};
use super::super::format_duration;
use super::{KeyPath, Validator, is_loopback_host, raw};

impl Validator<'_> {
    /// The `fleet` section; `None` (with problems recorded) when any part is unusable.
    pub(super) fn fleet(&mut self, value: Value) -> Option<Fleet> {
        let path = KeyPath::key("fleet");
        let f = self.de::<raw::Fleet>(&path, value)?;
        let name = self
            .required(&path.with_key("name"), f.name)
            .and_then(|n| self.fleet_id(&path.with_key("name"), "fleet.name", n));
        let host = match f.host {
            Some(h) => self.fleet_id(&path.with_key("host"), "fleet.host", h),
            None => {
                let h = hostname();
                if valid_fleet_id(&h) {
                    Some(h)
                } else {
                    self.problem(
                        &path,
                        format!(
                            "this host's name {h:?} cannot be a fleet host id (1 to {MAX_FLEET_ID} of A-Z a-z 0-9 . _ -); set fleet.host"
                        ),
                    );
                    None
                }
            }
        };
        let etcd = self
            .required(&path.with_key("etcd"), f.etcd)
            .and_then(|v| self.etcd(&path.with_key("etcd"), v));
        let seal_key_file = self
            .required(&path.with_key("seal_key_file"), f.seal_key_file)
            .and_then(|s| self.non_empty(&path.with_key("seal_key_file"), s))
            .map(|s| self.resolve(&s));
        let lease_ttl = self
            .duration(&path.with_key("lease_ttl"), f.lease_ttl, DEFAULT_LEASE_TTL)
            .and_then(|d| {
                if (MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&d) {
                    return Some(d);
                }
                self.problem(
                    &path.with_key("lease_ttl"),
                    format!(
                        "lease_ttl {} is out of range; give {} to {} (how fast a dead issuer is replaced)",
                        format_duration(d),
                        format_duration(MIN_LEASE_TTL),
                        format_duration(MAX_LEASE_TTL)
                    ),
                );
                None
            });
        let canary = self.count(
            &path.with_key("canary"),
            "canary",
            f.canary,
            DEFAULT_CANARY,
            1,
            "at least one host must serve a new generation before the rest deploy it",
        );
        let max_failures = self.count(
            &path.with_key("max_failures"),
            "max_failures",
            f.max_failures,
            DEFAULT_MAX_FAILURES,
            0,
            "0 declares a generation bad at its first failed host",
        );
        Some(Fleet {
            name: name?,
            host: host?,
            etcd: etcd?,
            seal_key_file: seal_key_file?,
            lease_ttl: lease_ttl?,
            canary: canary?,
            max_failures: max_failures?,
        })
    }

    fn etcd(&mut self, path: &KeyPath, value: Value) -> Option<Etcd> {
        if self.inline_secrets(path, &value) {
            return None;
        }
        let e = self.de::<raw::Etcd>(path, value)?;
        let endpoints = self
            .required(&path.with_key("endpoints"), e.endpoints)
            .and_then(|list| {
                if list.is_empty() {
                    self.problem(
                        &path.with_key("endpoints"),
                        "endpoints is empty; list every etcd member, e.g. [\"https://10.0.0.1:2379\"]",
                    );
                    return None;
                }
                let mut out = Vec::new();
                for (n, url) in list.into_iter().enumerate() {
                    let at = path.with_key("endpoints").with_index(n);
                    if let Some(url) = self.endpoint(&at, url) {
                        if out.contains(&url) {
                            self.problem(&at, format!("\"{url}\" is listed twice"));
                            continue;
                        }
                        out.push(url);
                    }
                }
                Some(out)
            });
        let mut file = |key: &str, value: Option<String>| match value {
            None => Some(None),
            Some(s) => self
                .non_empty(&path.with_key(key), s)
                .map(|s| Some(self.resolve(&s))),
        };
        let ca_file = file("ca_file", e.ca_file);
        let cert_file = file("cert_file", e.cert_file);
        let key_file = file("key_file", e.key_file);
        let client_identity = match (cert_file, key_file) {
            (Some(Some(cert_file)), Some(Some(key_file))) => Some(Some(ClientIdentity {
                cert_file,
                key_file,
            })),
            (Some(None), Some(None)) => Some(None),
            (Some(Some(_)), Some(None)) => {
                self.problem(
                    &path.with_key("cert_file"),
                    "cert_file needs key_file (the client certificate's private key); give both or neither",
                );
                None
            }
            (Some(None), Some(Some(_))) => {
                self.problem(
                    &path.with_key("key_file"),
                    "key_file needs cert_file (the client certificate); give both or neither",
                );
                None
            }
            _ => None,
        };
        let password = self.secret(path, "password", e.password_env, e.password_file, false);
        let auth = match (e.username, password) {
            (_, None) => None,
            (Some(u), Some(Some(password))) => self
                .non_empty(&path.with_key("username"), u)
                .map(|username| Some(EtcdAuth { username, password })),
            (None, Some(None)) => Some(None),
            (Some(_), Some(None)) => {
                self.problem(
                    &path.with_key("username"),
                    "username needs a password; set password_env (an environment variable's name) or password_file (a file holding it)",
                );
                None
            }
            (None, Some(Some(_))) => {
                self.problem(
                    path,
                    "a password is set without username; add username or remove the password",
                );
                None
            }
        };
        Some(Etcd {
            endpoints: endpoints?,
            ca_file: ca_file?,
            client_identity: client_identity?,
            auth: auth?,
        })
    }

    /// An etcd endpoint: `http(s)://host:port`, nothing else (no user, path or query).
    fn endpoint(&mut self, path: &KeyPath, url: String) -> Option<String> {
        let hint = "write it as \"https://HOST:PORT\", e.g. \"https://10.0.0.1:2379\"";
        let parsed = reqwest::Url::parse(&url).ok().filter(|u| {
            (u.scheme() == "https" || u.scheme() == "http")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && (u.path().is_empty() || u.path() == "/")
                && u.query().is_none()
                && u.fragment().is_none()
        });
        let Some(parsed) = parsed else {
            // The URL may carry a user and password: only its shape is described.
            let shown = if url.contains('@') {
                "the URL".to_owned()
            } else {
                format!("\"{url}\"")
            };
            self.problem(path, format!("{shown} is not an etcd endpoint; {hint}"));
            return None;
        };
        // The URL parser drops a port that is the scheme's default: the text says whether
        // one was written.
        let authority = url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
            .unwrap_or_default();
        let port_written = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.ends_with(':') && port.parse::<u16>().is_ok());
        if !port_written || parsed.port_or_known_default() == Some(0) {
            self.problem(
                path,
                format!("\"{url}\" has no port; etcd listens on its own (2379 by default): {hint}"),
            );
            return None;
        }
        if parsed.scheme() == "http" && !is_loopback_host(&parsed) {
            self.warnings.push(format!(
                "{path}: {url} is plain http to a host that is not loopback: etcd would see the fleet's traffic in clear; use https:// with ca_file"
            ));
        }
        Some(url.trim_end_matches('/').to_owned())
    }

    /// A fleet name or host id, which becomes one segment of etcd keys.
    fn fleet_id(&mut self, path: &KeyPath, key: &str, id: String) -> Option<String> {
        if valid_fleet_id(&id) {
            return Some(id);
        }
        self.problem(
            path,
            format!(
                "{key} {id:?} is not usable in etcd keys; use 1 to {MAX_FLEET_ID} of A-Z a-z 0-9 . _ - (not \".\" or \"..\")"
            ),
        );
        None
    }

    /// A count of hosts with a lower bound.
    fn count(
        &mut self,
        path: &KeyPath,
        key: &str,
        value: Option<u64>,
        default: usize,
        min: usize,
        why: &str,
    ) -> Option<usize> {
        match value {
            None => Some(default),
            Some(n) if n >= min as u64 && n <= MAX_FLEET_HOSTS as u64 => Some(n as usize),
            Some(n) => {
                self.problem(
                    path,
                    format!("{key} {n} is out of range; give {min} to {MAX_FLEET_HOSTS} ({why})"),
                );
                None
            }
        }
    }
}
