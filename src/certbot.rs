//! certbot's on-disk layout, read only: the renewal configs (`renewal/<name>.conf`), the live
//! lineages (`live/<name>/`) and the ACME accounts (`accounts/<server>/<id>/`). Used by
//! `certkeeper import certbot` and by `config check`'s warning about paths certbot still
//! renews. Nothing here writes, creates or locks anything under certbot's directory.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::text::escape_line;

/// certbot's default configuration directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/letsencrypt";

/// A problem reading certbot's files.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read.
    #[error("{}: cannot read: {reason}", path.display())]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// A line of a renewal config is not `key = value`, a `[section]` or a comment.
    #[error(
        "{}:{line}: cannot parse \"{}\"; certbot's renewal configs hold `key = value` lines and `[section]` headers",
        path.display(),
        escape_line(text)
    )]
    Syntax {
        /// The renewal config.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line as written.
        text: String,
    },
    /// A renewal config lacks a key certkeeper needs.
    #[error("{}: no `{key}`{}", path.display(), section.map(|s| format!(" in [{s}]")).unwrap_or_default())]
    Missing {
        /// The renewal config.
        path: PathBuf,
        /// The section, when not the top.
        section: Option<&'static str>,
        /// The missing key.
        key: &'static str,
    },
    /// An account file is not what certbot writes.
    #[error("{}: {reason}", path.display())]
    Account {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A renewal config: the top-level keys and the `[renewalparams]` section, in file order,
/// each with its line number.
#[derive(Clone, Debug, Default)]
pub struct RenewalConf {
    /// The file it came from.
    pub path: PathBuf,
    /// The lineage name (the file name without `.conf`).
    pub name: String,
    /// Keys before any section.
    pub top: BTreeMap<String, String>,
    /// `[renewalparams]`, in file order.
    pub params: Vec<(String, String)>,
}

impl RenewalConf {
    /// Parses the config at `path` (configobj syntax as certbot writes it).
    pub fn read(path: &Path) -> Result<RenewalConf, Error> {
        let text =
            crate::fsutil::read_regular_text(path, crate::fsutil::MAX_FILE).map_err(|e| {
                Error::Read {
                    path: path.to_owned(),
                    reason: reason(&e),
                }
            })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut conf = RenewalConf {
            path: path.to_owned(),
            name,
            ..Default::default()
        };
        let mut section: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(syntax(path, i, raw));
                };
                section = Some(
                    name.trim_matches(|c| c == '[' || c == ']')
                        .trim()
                        .to_owned(),
                );
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(syntax(path, i, raw));
            };
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(syntax(path, i, raw));
            }
            let value = unquote(value.trim());
            match section.as_deref() {
                None => {
                    conf.top.insert(key.to_owned(), value);
                }
                Some("renewalparams") => conf.params.push((key.to_owned(), value)),
                // Sub-sections of [renewalparams] and others carry nothing certkeeper maps.
                Some(_) => {}
            }
        }
        Ok(conf)
    }

    /// A `[renewalparams]` value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The ACME directory URL (`server` in `[renewalparams]`).
    pub fn server(&self) -> Result<&str, Error> {
        self.param("server").ok_or_else(|| Error::Missing {
            path: self.path.clone(),
            section: Some("renewalparams"),
            key: "server",
        })
    }

    /// A live file named at the top (`cert`, `chain`, `fullchain`, `privkey`), or certbot's
    /// default place for it under `config_dir/live/<name>/`.
    pub fn live_file(&self, config_dir: &Path, key: &str) -> PathBuf {
        self.top.get(key).map(PathBuf::from).unwrap_or_else(|| {
            config_dir
                .join("live")
                .join(&self.name)
                .join(format!("{key}.pem"))
        })
    }
}

/// An ACME account certbot registered: its directory, URL and whether its key is readable.
#[derive(Clone, Debug)]
pub struct Account {
    /// `accounts/<server>/<id>/`.
    pub dir: PathBuf,
    /// The account's URL at the CA (`uri` in `regr.json`).
    pub url: String,
}

/// The account directory of `id` at `server` (certbot's `accounts/<host[:port]/path>/<id>`).
pub fn account_dir(config_dir: &Path, server: &str, id: &str) -> Option<PathBuf> {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))?;
    if id.is_empty() || id.contains('/') || id.starts_with('.') || rest.contains("..") {
        return None;
    }
    Some(config_dir.join("accounts").join(rest).join(id))
}

/// Reads an account directory: the URL from `regr.json`, and proves `private_key.json` is an
/// RSA or EC JWK without keeping or showing any of it.
pub fn read_account(dir: &Path) -> Result<Account, Error> {
    let regr_path = dir.join("regr.json");
    let regr = read_json(&regr_path)?;
    let url = regr
        .get("uri")
        .and_then(|u| u.as_str())
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .ok_or_else(|| Error::Account {
            path: regr_path.clone(),
            reason: "no account URL (`uri`); run `certbot show_account` to check the account"
                .into(),
        })?
        .to_owned();
    let key_path = dir.join("private_key.json");
    let key = read_json(&key_path)?;
    match key.get("kty").and_then(|k| k.as_str()) {
        Some("RSA") => {}
        _ => {
            return Err(Error::Account {
                path: key_path,
                reason: "not an RSA JSON web key as certbot writes it".into(),
            });
        }
    }
    Ok(Account {
        dir: dir.to_owned(),
        url,
    })
}

/// Reads a small JSON file certbot wrote.
pub fn read_json(path: &Path) -> Result<serde_json::Value, Error> {
    let text = crate::fsutil::read_regular_text(path, crate::fsutil::MAX_FILE).map_err(|e| {
        Error::Read {
            path: path.to_owned(),
            reason: reason(&e),
        }
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Account {
        path: path.to_owned(),
        reason: format!("not JSON: line {} column {}", e.line(), e.column()),
    })
}

/// The renewal configs of `config_dir`, sorted by name: each parsed, or the error that
/// stopped it. `Err` when `renewal/` itself cannot be listed.
pub fn renewal_confs(config_dir: &Path) -> Result<Vec<Result<RenewalConf, Error>>, Error> {
    let dir = config_dir.join("renewal");
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::Read {
        path: dir.clone(),
        reason: reason(&e),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    paths.sort();
    Ok(paths.iter().map(|p| RenewalConf::read(p)).collect())
}

/// When `path` lies in a certbot lineage (`<dir>/live/<name>/…`) whose renewal config
/// `<dir>/renewal/<name>.conf` exists, that config's path: certbot still renews it.
pub fn renewing(path: &Path) -> Option<PathBuf> {
    let lineage = path.parent()?;
    let live = lineage.parent()?;
    if live.file_name()? != "live" {
        return None;
    }
    let name = lineage.file_name()?.to_str()?;
    let conf = live.parent()?.join("renewal").join(format!("{name}.conf"));
    conf.is_file().then_some(conf)
}

fn syntax(path: &Path, index: usize, text: &str) -> Error {
    Error::Syntax {
        path: path.to_owned(),
        line: index + 1,
        text: text.to_owned(),
    }
}

/// configobj values may be quoted.
fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.to_owned();
        }
    }
    v.to_owned()
}

fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "not found".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_config_parses_and_bad_lines_name_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.example.test.conf");
        std::fs::write(
            &path,
            "# renew_before_expiry = 30 days\nversion = 2.1.0\ncert = /x/cert.pem\n\n[renewalparams]\naccount = abc\nserver = \"https://ca.test/dir\"\nkey_type = ecdsa\n",
        )
        .unwrap();
        let conf = RenewalConf::read(&path).unwrap();
        assert_eq!(conf.name, "a.example.test");
        assert_eq!(conf.server().unwrap(), "https://ca.test/dir");
        assert_eq!(conf.param("key_type"), Some("ecdsa"));
        assert_eq!(
            conf.live_file(Path::new("/etc/le"), "cert"),
            PathBuf::from("/x/cert.pem")
        );
        assert_eq!(
            conf.live_file(Path::new("/etc/le"), "chain"),
            PathBuf::from("/etc/le/live/a.example.test/chain.pem")
        );
        std::fs::write(&path, "version = 2\n[renewalparams\n").unwrap();
        let e = RenewalConf::read(&path).unwrap_err().to_string();
        assert!(e.ends_with(":2: cannot parse \"[renewalparams\"; certbot's renewal configs hold `key = value` lines and `[section]` headers"), "{e}");
    }

    #[test]
    fn account_dirs_follow_certbots_server_path_and_stay_inside() {
        assert_eq!(
            account_dir(
                Path::new("/etc/le"),
                "https://acme-v02.api.letsencrypt.org/directory",
                "abc"
            ),
            Some(PathBuf::from(
                "/etc/le/accounts/acme-v02.api.letsencrypt.org/directory/abc"
            ))
        );
        assert_eq!(account_dir(Path::new("/e"), "https://h/../../x", "a"), None);
        assert_eq!(account_dir(Path::new("/e"), "https://h/d", "../a"), None);
    }
}
