//! `certkeeper import certbot [--config-dir DIR]`: reads certbot's renewal configs, live
//! lineages and accounts (read only) and prints a certkeeper config fragment: an issuer per
//! ACME server and account, reusing certbot's account, and a certificate per lineage, with a
//! comment for every setting that does not carry over. Private keys are referenced by path,
//! never printed; hooks are shown by program only, since their arguments may carry tokens.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::certbot::{self, RenewalConf};
use crate::text::escape_line;

/// Exit code when every lineage was imported.
const OK: u8 = 0;
/// Exit code when some lineages could not be (the fragment holds the others).
const SOME_FAILED: u8 = 1;
/// Exit code when nothing could be read (no such directory, no `renewal/`).
const UNUSABLE: u8 = 2;

/// Placeholder a user must replace before `config check` accepts the fragment.
pub const FILL_IN_PROVIDER: &str = "FILL-IN-dns-provider";

/// Runs `import certbot`.
pub fn certbot(config_dir: &Path) -> u8 {
    let confs = match certbot::renewal_confs(config_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "certkeeper: {}; give certbot's configuration directory with --config-dir (default {})",
                escape_line(&e.to_string()),
                certbot::DEFAULT_CONFIG_DIR
            );
            return UNUSABLE;
        }
    };
    let mut failed = 0;
    let mut lineages = Vec::new();
    for conf in confs {
        match conf.and_then(|c| Lineage::read(config_dir, c)) {
            Ok(l) => lineages.push(l),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "certkeeper: {}; this lineage is left out of the fragment",
                    escape_line(&e.to_string())
                );
            }
        }
    }
    let issuers = issuers(config_dir, &lineages);
    let out = render(config_dir, &issuers, &lineages);
    if !super::print(&out) {
        return SOME_FAILED;
    }
    match failed {
        0 => OK,
        _ => SOME_FAILED,
    }
}

/// One lineage, read.
struct Lineage {
    conf: RenewalConf,
    server: String,
    domains: Vec<String>,
}

impl Lineage {
    fn read(config_dir: &Path, conf: RenewalConf) -> Result<Lineage, certbot::Error> {
        let server = conf.server()?.to_owned();
        let cert_path = conf.live_file(config_dir, "cert");
        let bytes =
            crate::fsutil::read_regular(&cert_path, crate::fsutil::MAX_FILE).map_err(|e| {
                certbot::Error::Read {
                    path: cert_path.clone(),
                    reason: format!("{e} (the lineage's live certificate names its domains)"),
                }
            })?;
        let leaf = crate::x509::read_certificates(&bytes)
            .ok()
            .and_then(|(certs, _)| certs.into_iter().next())
            .ok_or_else(|| certbot::Error::Account {
                path: cert_path.clone(),
                reason: "holds no certificate".into(),
            })?;
        Ok(Lineage {
            conf,
            server,
            domains: leaf.sans,
        })
    }
}

/// An issuer of the fragment: one per ACME server and certbot account.
struct IssuerOut {
    key: String,
    server: String,
    account: Result<certbot::Account, String>,
}

fn issuers(config_dir: &Path, lineages: &[Lineage]) -> BTreeMap<(String, String), IssuerOut> {
    let mut out: BTreeMap<(String, String), IssuerOut> = BTreeMap::new();
    let mut order = 0;
    for l in lineages {
        let id = l.conf.param("account").unwrap_or_default().to_owned();
        let slot = (l.server.clone(), id.clone());
        if out.contains_key(&slot) {
            continue;
        }
        order += 1;
        let account = match certbot::account_dir(config_dir, &l.server, &id) {
            None if id.is_empty() => Err("the renewal config names no account".to_owned()),
            None => Err("the account id or server cannot name a directory".to_owned()),
            Some(dir) => certbot::read_account(&dir).map_err(|e| e.to_string()),
        };
        if let Err(why) = &account {
            eprintln!(
                "certkeeper: warning: certbot's account for {} cannot be reused: {}; certkeeper will register a new one",
                escape_line(&l.server),
                escape_line(why)
            );
        }
        let key = issuer_key(&l.server, order);
        out.insert(
            slot,
            IssuerOut {
                key,
                server: l.server.clone(),
                account,
            },
        );
    }
    // Two servers that would get the same key get numbered ones.
    let mut seen = BTreeMap::<String, usize>::new();
    for issuer in out.values_mut() {
        let n = seen.entry(issuer.key.clone()).or_default();
        *n += 1;
        if *n > 1 {
            issuer.key = format!("{}-{n}", issuer.key);
        }
    }
    out
}

fn issuer_key(server: &str, order: usize) -> String {
    match server {
        "https://acme-v02.api.letsencrypt.org/directory" => "letsencrypt".into(),
        "https://acme-staging-v02.api.letsencrypt.org/directory" => "letsencrypt-staging".into(),
        _ if order == 1 => "certbot".into(),
        _ => format!("certbot-{order}"),
    }
}

fn render(
    config_dir: &Path,
    issuers: &BTreeMap<(String, String), IssuerOut>,
    lineages: &[Lineage],
) -> String {
    let mut o = String::new();
    let q = |s: &str| quote(s);
    let _ = writeln!(
        o,
        "# certkeeper config fragment imported from certbot's {} (nothing there was changed).",
        escape_line(&config_dir.display().to_string())
    );
    let _ = writeln!(
        o,
        "# Put it with state_dir and dns_providers into your config, replace every {FILL_IN_PROVIDER},\n\
         # then: certkeeper config check; certkeeper renew --force NAME; and once that worked,\n\
         # systemctl disable --now certbot.timer (certbot would otherwise renew these too)."
    );
    o.push_str("issuers:\n");
    for i in issuers.values() {
        let _ = writeln!(
            o,
            "  {}:\n    type: acme\n    directory: {}",
            i.key,
            q(&i.server)
        );
        match &i.account {
            Ok(a) => {
                let _ = writeln!(
                    o,
                    "    # certbot's account {}, read only: no new registration",
                    escape_line(&a.url)
                );
                let _ = writeln!(
                    o,
                    "    certbot_account: {}",
                    q(&a.dir.display().to_string())
                );
            }
            Err(why) => {
                let _ = writeln!(
                    o,
                    "    # certbot's account could not be reused ({}): a new one is registered",
                    escape_line(why)
                );
            }
        }
    }
    o.push_str("certificates:\n");
    let key_of = |l: &Lineage| -> Option<&str> {
        let id = l.conf.param("account").unwrap_or_default();
        issuers
            .get(&(l.server.clone(), id.to_owned()))
            .map(|i| i.key.as_str())
    };
    for l in lineages {
        let name = cert_name(&l.conf.name);
        let _ = writeln!(o, "  - name: {}", q(&name));
        let domains: Vec<String> = l.domains.iter().map(|d| q(d)).collect();
        let _ = writeln!(o, "    domains: [{}]", domains.join(", "));
        let _ = writeln!(o, "    issuer: {}", key_of(l).unwrap_or("certbot"));
        let (key, key_note) = key_type(&l.conf);
        let _ = writeln!(o, "    key: {key}");
        if let Some(note) = key_note {
            let _ = writeln!(o, "    # {note}");
        }
        let path = |k: &str| q(&l.conf.live_file(config_dir, k).display().to_string());
        let _ = writeln!(o, "    fullchain: {}", path("fullchain"));
        let _ = writeln!(o, "    privkey: {}", path("privkey"));
        let _ = writeln!(
            o,
            "    # certbot's leaf alone and intermediates alone, kept current with the pair:"
        );
        let _ = writeln!(o, "    cert: {}", path("cert"));
        let _ = writeln!(o, "    chain: {}", path("chain"));
        let (provider, notes) = not_carried(&l.conf);
        let _ = writeln!(o, "    dns_provider: {provider}");
        for note in notes {
            let _ = writeln!(o, "    # {note}");
        }
    }
    o
}

/// A certkeeper certificate name (`[a-z0-9][a-z0-9._-]*`) from a lineage name.
fn cert_name(lineage: &str) -> String {
    let mut name: String = lineage
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'c');
    }
    name
}

/// certkeeper's `key` for the lineage's `key_type`, `rsa_key_size` and `elliptic_curve`,
/// with a note when it is not an exact match.
fn key_type(conf: &RenewalConf) -> (&'static str, Option<String>) {
    let kind = conf.param("key_type");
    match kind {
        Some("ecdsa") => match conf.param("elliptic_curve").unwrap_or("secp256r1") {
            "secp256r1" => ("ecdsa-p256", None),
            "secp384r1" => ("ecdsa-p384", None),
            other => (
                "ecdsa-p384",
                Some(format!(
                    "certbot used the curve {}; certkeeper offers ecdsa-p256 and ecdsa-p384",
                    escape_line(other)
                )),
            ),
        },
        Some("rsa") | None => {
            let size = conf.param("rsa_key_size").unwrap_or("2048");
            let note = kind.is_none().then(|| {
                "certbot's renewal config names no key_type: RSA, certbot's default before 2.0"
                    .to_owned()
            });
            match size {
                "2048" => ("rsa-2048", note),
                "3072" => ("rsa-3072", note),
                "4096" => ("rsa-4096", note),
                other => (
                    "rsa-4096",
                    Some(format!(
                        "certbot used {}-bit RSA keys; certkeeper offers rsa-2048, rsa-3072 and rsa-4096",
                        escape_line(other)
                    )),
                ),
            }
        }
        Some(other) => (
            "ecdsa-p256",
            Some(format!(
                "certbot's key_type {} is unknown to certkeeper; set key: to one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096",
                escape_line(other)
            )),
        ),
    }
}

/// The `dns_provider` line's value and a comment for each certbot setting that does not
/// carry over.
fn not_carried(conf: &RenewalConf) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    let authenticator = conf.param("authenticator").unwrap_or("");
    let provider = FILL_IN_PROVIDER.to_owned();
    match authenticator {
        "manual" => {
            let auth = conf.param("manual_auth_hook").map(program);
            let cleanup = conf.param("manual_cleanup_hook").map(program);
            match auth {
                Some(auth) => notes.push(format!(
                    "not carried over: authenticator manual with manual_auth_hook {auth}{}; the same idea in certkeeper is a dns_providers entry of `type: exec` (run as `CMD present|cleanup FQDN VALUE`, not with certbot's CERTBOT_* variables: adapt the hook), named in {FILL_IN_PROVIDER}'s place",
                    cleanup
                        .map(|c| format!(" and manual_cleanup_hook {c}"))
                        .unwrap_or_default()
                )),
                None => notes.push(format!(
                    "not carried over: authenticator manual without a hook (answered by hand); certkeeper needs a DNS provider: cloudflare, aliyun or exec, named in {FILL_IN_PROVIDER}'s place"
                )),
            }
        }
        "webroot" | "standalone" | "nginx" | "apache" => notes.push(format!(
            "not carried over: authenticator {authenticator} (HTTP-01); certkeeper proves control with DNS-01 only: add a dns_providers entry (cloudflare, aliyun, or exec for another DNS API) and name it in {FILL_IN_PROVIDER}'s place"
        )),
        a if a.starts_with("dns-") => {
            let vendor = &a[4..];
            let hint = match vendor {
                "cloudflare" => "`type: cloudflare` with api_token_file (a file holding only the token, not certbot's ini file)",
                _ => "cloudflare, aliyun, or `type: exec` with a hook that calls your DNS's API",
            };
            notes.push(format!(
                "not carried over: authenticator {} and its credentials; certkeeper's dns_providers entry for it: {hint}, named in {FILL_IN_PROVIDER}'s place",
                escape_line(a)
            ));
        }
        "" => notes.push(format!(
            "certbot's renewal config names no authenticator; add a dns_providers entry and name it in {FILL_IN_PROVIDER}'s place"
        )),
        other => notes.push(format!(
            "not carried over: authenticator {}; add a dns_providers entry and name it in {FILL_IN_PROVIDER}'s place",
            escape_line(other)
        )),
    }
    if let Some(installer) = conf
        .param("installer")
        .filter(|i| *i != "None" && !i.is_empty())
    {
        notes.push(format!(
            "not carried over: installer {}; certkeeper does not edit server configs: point the server at fullchain and privkey and set reload: {{ command: [systemctl, reload, {}] }}",
            escape_line(installer),
            escape_line(installer)
        ));
    }
    for hook in ["pre_hook", "post_hook", "renew_hook", "deploy_hook"] {
        let Some(value) = conf.param(hook) else {
            continue;
        };
        match reload_of(value) {
            Some(argv) => notes.push(format!(
                "not carried over: {}{hook} (reloads a service); certkeeper's equivalent: reload: {{ command: [{}] }}",
                if hook == "renew_hook" { "--deploy-hook, kept as " } else { "" },
                argv.join(", ")
            )),
            None => notes.push(format!(
                "not carried over: {}{hook} {}; certkeeper runs reload: {{ command: [...] }} after each new pair, and verify: to check what is served",
                if hook == "renew_hook" { "--deploy-hook, kept as " } else { "" },
                program(value)
            )),
        }
    }
    for (key, _) in &conf.params {
        if !MAPPED.contains(&key.as_str()) && !key.starts_with("dns_") {
            notes.push(format!(
                "not carried over: {} (no certkeeper equivalent)",
                escape_line(key)
            ));
        }
    }
    (provider, notes)
}

/// A hook shown by its program only (its arguments may carry tokens), quoted.
fn program(command: &str) -> String {
    let first = command.split_whitespace().next().unwrap_or("");
    let more = command.split_whitespace().count() > 1;
    format!(
        "`{}`{}",
        escape_line(first),
        if more {
            " (arguments not shown: they may carry secrets)"
        } else {
            ""
        }
    )
}

/// The argv of a hook that only reloads or restarts a service (`systemctl reload nginx`,
/// `service nginx reload`, `nginx -s reload`), which is safe to repeat.
fn reload_of(command: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let plain = |w: &&str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '/'))
    };
    if !words.iter().all(plain) {
        return None;
    }
    let program = words.first()?.rsplit('/').next()?;
    let ok = match (program, &words[1..]) {
        ("systemctl", [verb, _unit]) => matches!(
            *verb,
            "reload" | "restart" | "try-reload-or-restart" | "reload-or-restart"
        ),
        ("service", [_name, verb]) => matches!(*verb, "reload" | "restart"),
        ("nginx", ["-s", "reload"]) => true,
        _ => false,
    };
    ok.then(|| words.iter().map(|w| quote(w)).collect())
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `[renewalparams]` keys the fragment carries or that need nothing.
const MAPPED: &[&str] = &[
    "account",
    "server",
    "authenticator",
    "installer",
    "key_type",
    "rsa_key_size",
    "elliptic_curve",
    "manual_auth_hook",
    "manual_cleanup_hook",
    "pre_hook",
    "post_hook",
    "renew_hook",
    "deploy_hook",
    "pref_challs",
    "manual_public_ip_logging_ok",
    "webroot_path",
    "config_dir",
    "work_dir",
    "logs_dir",
    "no_random_sleep_on_renew",
];

/// The config dir given, or certbot's default.
pub fn config_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| PathBuf::from(certbot::DEFAULT_CONFIG_DIR))
}
