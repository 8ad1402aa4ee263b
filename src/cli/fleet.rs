//! `certkeeper fleet …`: the fleet's own commands. `fleet keygen` writes a new seal key, the
//! key every host of a fleet shares to seal and open the private keys kept in etcd;
//! `fleet status` shows each shared certificate as etcd has it (read only).

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use certkeeper_fleet::{HostResult, Verdict};

use crate::config::{KeyPath, SEAL_KEY_LEN};
use crate::fleet::{ConnectError, Timeouts, view};
use crate::text::rfc3339;

/// Exit code when the key could not (or would not) be written.
const WRITE_FAILED: u8 = 1;
/// Exit code of a usage or config error.
const USAGE: u8 = 2;

/// Runs `fleet keygen`: 32 random bytes to `out`, or to the config's `fleet.seal_key_file`.
pub fn keygen(config_path: &Path, out: Option<&Path>, force: bool) -> u8 {
    let target = match out {
        Some(p) => p.to_owned(),
        None => {
            let Ok(config) = super::load_config(config_path) else {
                return USAGE;
            };
            match config.fleet {
                Some(fleet) => fleet.seal_key_file,
                None => {
                    eprintln!(
                        "certkeeper: {}: there is no fleet section, so no seal_key_file to write; add the fleet section or pass --out PATH",
                        crate::text::escape_line(&config_path.display().to_string())
                    );
                    return USAGE;
                }
            }
        }
    };
    let shown = crate::text::escape_line(&target.display().to_string());
    let key = match crate::fleet::seal::generate_key() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("certkeeper: cannot make a seal key: {e}");
            return WRITE_FAILED;
        }
    };
    if let Err(e) = write_key(&target, &key[..], force) {
        eprintln!("certkeeper: {}", crate::text::escape_line(&e.to_string()));
        // A path that names no file is a usage error; anything else was a refused write.
        return match e {
            WriteError::NoName { .. } => USAGE,
            _ => WRITE_FAILED,
        };
    }
    let done = format!(
        "wrote a new seal key ({SEAL_KEY_LEN} bytes, mode 0600) to {shown}\n\
         copy this same file to every host of the fleet over a secure channel (scp, a secret store), keep it mode 0600, and never paste it into chat, tickets or mail\n"
    );
    if !super::print(&done) {
        return WRITE_FAILED;
    }
    0
}

/// Exit code when etcd cannot be reached, has no quorum, or holds a record it cannot read.
const UNREACHABLE: u8 = 1;
/// The most `fleet status` waits for etcd in all: above the client's own timeouts (a
/// connect and two requests), so that they, not this, say what did not answer.
const STATUS_BUDGET: Duration = Duration::from_secs(20);

/// Runs `fleet status`: each shared certificate (or the named ones) as etcd has it.
pub fn status(config_path: &Path, names: &[String], json: bool) -> u8 {
    let Ok(config) = super::load_config(config_path) else {
        return USAGE;
    };
    let shown_path = crate::text::escape_line(&config_path.display().to_string());
    let Some(fleet) = &config.fleet else {
        eprintln!(
            "certkeeper: {shown_path}: there is no fleet section, so no fleet to show; add the fleet section (name, etcd.endpoints, seal_key_file) and mark shared certificates fleet: true"
        );
        return USAGE;
    };
    if !super::known_names(&config, config_path, names) {
        return USAGE;
    }
    let not_shared: Vec<String> = names
        .iter()
        .filter(|n| config.certificate(n).is_some_and(|c| !c.fleet))
        .map(|n| format!("{:?}", crate::text::escape_line(n)))
        .collect();
    if !not_shared.is_empty() {
        eprintln!(
            "certkeeper: {shown_path}: certificate {} is not shared (no `fleet: true`): fleet status shows shared certificates only",
            not_shared.join(", ")
        );
        return USAGE;
    }
    let certs: Vec<String> = config
        .certificates
        .iter()
        .filter(|c| c.fleet && (names.is_empty() || names.contains(&c.name)))
        .map(|c| c.name.clone())
        .collect();
    let read = view::within(STATUS_BUDGET, || async {
        let client = crate::fleet::connect(fleet, Timeouts::DEFAULT).await?;
        let etcd = |source| ConnectError::Etcd {
            fleet: fleet.name.clone(),
            source,
        };
        client.probe().await.map_err(etcd)?;
        let mut views = Vec::with_capacity(certs.len());
        for cert in &certs {
            views.push(view::read(&client, cert).await.map_err(etcd)?);
        }
        Ok::<_, ConnectError>(views)
    });
    let views = match read {
        Some(Ok(views)) => views,
        Some(Err(e)) => {
            if let Some(key) = e.key() {
                let mut path = KeyPath(Vec::new());
                for k in key.split('.') {
                    path = path.with_key(k);
                }
                let at = config
                    .line_of(&path)
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default();
                eprintln!(
                    "certkeeper: {shown_path}{at}: {}",
                    crate::text::escape_line(&e.to_string())
                );
                return USAGE;
            }
            let hint = match &e {
                ConnectError::Etcd {
                    source: certkeeper_fleet::Error::Record { .. },
                    ..
                } => {
                    "a newer certkeeper or another program wrote it: compare the versions of the fleet's hosts"
                }
                // A TLS handshake refused on either side: the CA or the client certificate.
                _ if e.to_string().contains("certificate") => {
                    "check that fleet.etcd.ca_file is the CA that signed the members' certificates, and that they accept fleet.etcd.cert_file"
                }
                _ => {
                    "hosts keep serving what they have: check that a majority of the etcd members in fleet.etcd.endpoints run and reach each other, over https:// when they speak TLS"
                }
            };
            eprintln!(
                "certkeeper: {}; {hint}",
                crate::text::escape_line(&e.to_string())
            );
            return UNREACHABLE;
        }
        None => {
            eprintln!(
                "certkeeper: fleet {}: etcd did not answer within {}; hosts keep serving what they have: check that a majority of the etcd members in fleet.etcd.endpoints run and reach each other",
                fleet.name,
                crate::text::seconds(STATUS_BUDGET)
            );
            return UNREACHABLE;
        }
    };
    let out = if json {
        status_json(fleet, &views)
    } else {
        status_text(fleet, &views)
    };
    if !super::print(&out) {
        return WRITE_FAILED;
    }
    0
}

/// The JSON of `fleet status --json` (its schema is in the README).
fn status_json(fleet: &crate::config::Fleet, views: &[view::CertView]) -> String {
    use serde_json::{Value, json};
    let certificates: Vec<Value> = views
        .iter()
        .map(|v| {
            let current = v.current.as_ref().map(|g| {
                json!({
                    "serial": g.serial,
                    "fingerprint": g.fingerprint,
                    "not_after": rfc3339(g.not_after),
                    "issued_by": g.issued_by,
                    "issued_at": rfc3339(g.issued_at),
                    "verdict": verdict_json(&g.verdict),
                })
            });
            let hosts: Vec<Value> = v
                .hosts
                .iter()
                .map(|(host, s)| {
                    json!({
                        "host": host,
                        "serving": s.serving,
                        "on_current": v.current.as_ref().is_some_and(|g| s.serving == Some(g.serial)),
                        "result": result_word(s.result),
                        "at": rfc3339(s.at),
                        "why": s.why,
                    })
                })
                .collect();
            json!({
                "name": v.name,
                "leader": v.leader,
                "current": current,
                "hosts": hosts,
            })
        })
        .collect();
    let doc = json!({
        "fleet": fleet.name,
        "host": fleet.host,
        "connected": true,
        "certificates": certificates,
    });
    // A tree of strings, numbers, bools and nulls: encoding cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn verdict_json(v: &Verdict) -> serde_json::Value {
    use serde_json::json;
    match v {
        Verdict::Pending => json!({"state": "pending", "by": null, "at": null, "why": null}),
        Verdict::Good { by, at } => {
            json!({"state": "good", "by": by, "at": rfc3339(*at), "why": null})
        }
        Verdict::Bad { by, why, at } => {
            json!({"state": "bad", "by": by, "at": rfc3339(*at), "why": why})
        }
    }
}

/// The readable report of `fleet status`: every value from etcd on one line, escaped.
fn status_text(fleet: &crate::config::Fleet, views: &[view::CertView]) -> String {
    let e = |s: &str| crate::text::escape_line(s);
    let mut out = format!(
        "fleet {}, this host {}: {} shared certificate{}\n",
        e(&fleet.name),
        e(&fleet.host),
        views.len(),
        if views.len() == 1 { "" } else { "s" }
    );
    for v in views {
        out.push_str(&format!("{}\n", e(&v.name)));
        let mut field = |k: &str, value: String| out.push_str(&format!("  {k:<12} {value}\n"));
        match &v.current {
            None => field("generation", "none published yet".into()),
            Some(g) => {
                field("generation", g.serial.to_string());
                field("fingerprint", e(&g.fingerprint));
                field("not after", rfc3339(g.not_after));
                field(
                    "issued",
                    format!("by {} at {}", e(&g.issued_by), rfc3339(g.issued_at)),
                );
                field("verdict", verdict_text(&g.verdict));
            }
        }
        field(
            "leader",
            v.leader.as_deref().map(e).unwrap_or_else(|| "none".into()),
        );
        if v.hosts.is_empty() {
            field(
                "hosts",
                "none reporting (a host's state lasts while its certkeeper holds its lease)".into(),
            );
            continue;
        }
        field("hosts", format!("{} reporting", v.hosts.len()));
        let rows: Vec<[String; 5]> = v
            .hosts
            .iter()
            .map(|(host, s)| {
                [
                    e(host),
                    s.serving
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into()),
                    result_word(s.result).to_owned(),
                    rfc3339(s.at),
                    s.why.as_deref().map(e).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let header = ["HOST", "SERVING", "RESULT", "AT", "WHY"].map(String::from);
        let table: Vec<[String; 5]> = std::iter::once(header).chain(rows).collect();
        for line in crate::text::table(&table, &[1]) {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

fn verdict_text(v: &Verdict) -> String {
    let e = |s: &str| crate::text::escape_line(s);
    match v {
        Verdict::Pending => "pending (the canary does not serve it yet)".into(),
        Verdict::Good { by, at } => format!("good, by {} at {}", e(by), rfc3339(*at)),
        Verdict::Bad { by, why, at } => {
            format!("bad, by {} at {}: {}", e(by), rfc3339(*at), e(why))
        }
    }
}

fn result_word(r: HostResult) -> &'static str {
    match r {
        HostResult::Deployed => "deployed",
        HostResult::Failed => "failed",
        HostResult::Reverted => "reverted",
        HostResult::Waiting => "waiting",
    }
}

/// Why the key was not written. Nothing is left behind on error.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(
        "refusing to write {}: it is a symbolic link, and certkeeper never writes a key through one; remove the link or choose another path",
        path.display()
    )]
    Link { path: PathBuf },
    #[error(
        "refusing to write {}: {what} is there, not a regular file; move it away or choose another path",
        path.display()
    )]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "{} already exists; replacing a fleet's seal key makes every host without the new one unable to deploy: pass --force to replace it",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error("{} is not a file path; name the file to write", path.display())]
    NoName { path: PathBuf },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Writes `bytes` to `target`, mode 0600, atomically: a temporary file created exclusively
/// beside it (never through a link), fsynced, renamed onto the target (refusing to replace
/// anything unless `force`), and the directory fsynced. A symbolic link at the target is
/// refused even with `force`.
fn write_key(target: &Path, bytes: &[u8], force: bool) -> Result<(), WriteError> {
    let Some(name) = target.file_name() else {
        return Err(WriteError::NoName {
            path: target.to_owned(),
        });
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |op, path: &Path| {
        let path = path.to_owned();
        move |source| WriteError::Io { op, path, source }
    };
    match fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(WriteError::Link {
                path: target.to_owned(),
            });
        }
        Ok(m) if !m.file_type().is_file() => {
            return Err(WriteError::NotAFile {
                path: target.to_owned(),
                what: crate::fsutil::kind_name(m.file_type()),
            });
        }
        Ok(_) if !force => {
            return Err(WriteError::Exists {
                path: target.to_owned(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("look at", target)(e)),
    }
    let mut tmp_name = std::ffi::OsString::from(".certkeeper-tmp-");
    tmp_name.push(name);
    tmp_name.push(format!(".{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)
            .map_err(io("write", target))?;
        // The mode given to open() was reduced by the umask; 0600 is meant whatever it is.
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(io("change the mode of", target))?;
        file.write_all(bytes).map_err(io("write", target))?;
        file.sync_all().map_err(io("sync", target))?;
        if force {
            // A rename replaces whatever name is there (a link planted meanwhile included)
            // and never writes through it.
            fs::rename(&tmp, target).map_err(io("rename onto", target))
        } else {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &tmp,
                rustix::fs::CWD,
                target,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| match e {
                rustix::io::Errno::EXIST => WriteError::Exists {
                    path: target.to_owned(),
                },
                e => io("rename onto", target)(e.into()),
            })
        }
    })();
    if let Err(e) = written {
        // Leave nothing behind; the first error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory", dir))
}
