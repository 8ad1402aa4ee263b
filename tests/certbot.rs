//! Moving from certbot: `import certbot` on a real certbot lineage made against Pebble (its
//! fragment, its account reused by `renew`, certbot's files untouched), `discover` on
//! certbot's layout (a lineage is one certificate, listed once, `archive/` skipped), broken
//! lineages and renewal configs, and `config check`'s warning about paths certbot still
//! renews.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::fixtures::{LeafSpec, Pki};
use crate::util::pebble::Pebble;
use crate::util::{Dir, Run, bin};

/// The Debian package that provides certbot.
const CERTBOT_PACKAGE: &str = "certbot";

/// A certbot configuration directory holding one real lineage for `a.example.test` and
/// `b.example.test`, issued by `pebble` over DNS-01 through a manual auth hook.
struct Certbot {
    /// Holds the lineage (and the hooks, work and log directories) until the test ends.
    _dir: Dir,
    config_dir: PathBuf,
}

impl Certbot {
    fn issue(pebble: &Pebble) -> Certbot {
        let dir = Dir::new();
        let hooks = |action: &str| {
            format!(
                r#"#!/bin/sh
set -e
exec python3 - <<'PY'
import json, os, urllib.request
host = "_acme-challenge." + os.environ["CERTBOT_DOMAIN"] + "."
body = {{"host": host, "value": os.environ.get("CERTBOT_VALIDATION", "")}}
req = urllib.request.Request("{base}/{action}", data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(req, timeout=10).read()
PY
"#,
                base = pebble.challtestsrv
            )
        };
        for (name, action) in [("auth-hook", "set-txt"), ("cleanup-hook", "clear-txt")] {
            let path = dir.write(&format!("hooks/{name}"), hooks(action));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let config_dir = dir.join("letsencrypt");
        let out = Command::new("certbot")
            .arg("certonly")
            .args(["--manual", "--preferred-challenges", "dns"])
            .arg("--manual-auth-hook")
            .arg(dir.join("hooks/auth-hook"))
            .arg("--manual-cleanup-hook")
            .arg(dir.join("hooks/cleanup-hook"))
            .args(["--deploy-hook", "systemctl reload nginx"])
            .args(["--server", &pebble.directory])
            .arg("--config-dir")
            .arg(&config_dir)
            .arg("--work-dir")
            .arg(dir.join("work"))
            .arg("--logs-dir")
            .arg(dir.join("logs"))
            .args([
                "--agree-tos",
                "--register-unsafely-without-email",
                "--non-interactive",
                "--no-random-sleep-on-renew",
                "-d",
                "a.example.test",
                "-d",
                "b.example.test",
            ])
            .env("REQUESTS_CA_BUNDLE", &pebble.trust_roots)
            // The deploy hook is only recorded: a stub `systemctl` answers it.
            .env("PATH", stub_path(&dir))
            .output()
            .unwrap_or_else(|e| {
                panic!("certbot cannot run ({e}); install it: apt-get install -y {CERTBOT_PACKAGE}")
            });
        let run = Run::from(out);
        assert_eq!(
            run.code,
            0,
            "certbot failed: {run:?}\n--- its log\n{}\n--- pebble\n{}",
            std::fs::read_to_string(dir.join("logs/letsencrypt.log")).unwrap_or_default(),
            pebble.logs()
        );
        Certbot {
            _dir: dir,
            config_dir,
        }
    }

    fn live(&self) -> PathBuf {
        self.config_dir.join("live/a.example.test")
    }

    fn account_dir(&self) -> PathBuf {
        let accounts = self.config_dir.join("accounts");
        let found = walk(&accounts)
            .into_iter()
            .filter(|p| p.ends_with("regr.json"))
            .collect::<Vec<_>>();
        assert_eq!(found.len(), 1, "one account: {found:?}");
        found[0].parent().unwrap().to_owned()
    }
}

/// A PATH whose `systemctl` records its call and succeeds, then the real PATH.
fn stub_path(dir: &Dir) -> String {
    let stub = dir.write(
        "bin/systemctl",
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\n",
            dir.join("systemctl.log").display()
        ),
    );
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Every file under `root`, sorted (links not followed).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Each entry under `root` with its type, mode and content (a link's target): equal maps
/// mean nothing was created, removed, changed or re-linked.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode();
        let what = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&p).unwrap().display())
        } else if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_owned()
        } else {
            certkeeper::text::sha256_hex(&std::fs::read(&p).unwrap())
        };
        out.insert(p, format!("{mode:o} {what}"));
    }
    out
}

fn import(config_dir: &Path) -> Run {
    let out = Command::new(bin())
        .args(["import", "certbot", "--config-dir"])
        .arg(config_dir)
        .output()
        .unwrap();
    Run::from(out)
}

/// The top of a config around an imported fragment: state_dir, the exec provider that
/// publishes through challtestsrv, Pebble's resolvers.
fn config_top(dir: &Dir, pebble: &Pebble) -> String {
    let hook = dir.write(
        "hooks/publish",
        format!(
            r#"#!/bin/sh
set -e
exec python3 - "$@" <<'PY'
import json, sys, urllib.request
action, fqdn, value = sys.argv[1:4]
path, body = ("set-txt", {{"host": fqdn, "value": value}}) if action == "present" else ("clear-txt", {{"host": fqdn}})
req = urllib.request.Request("{base}/" + path, data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(req, timeout=10).read()
PY
"#,
            base = pebble.challtestsrv
        ),
    );
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "state_dir: state\n\
         dns_providers:\n  hook:\n    type: exec\n    command: [hooks/publish]\n    timeout: 20s\n\
         dns:\n  resolvers: [\"{}\"]\n  propagation_timeout: 10s\n  poll_interval: 1s\n",
        pebble.dns
    )
}

/// The fragment with the issuer trusting Pebble's roots (certbot used REQUESTS_CA_BUNDLE)
/// and Pebble's one-request-at-a-time limit; nothing else changed.
fn for_pebble(fragment: &str, pebble: &Pebble) -> String {
    fragment.replace(
        "    type: acme\n",
        &format!(
            "    type: acme\n    trust_roots: {}\n    max_concurrent_requests: 1\n",
            pebble.trust_roots.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn import_certbot_prints_a_fragment_that_checks_and_reuses_certbots_account() {
    let pebble = Pebble::start_with(crate::util::pebble::Options {
        keep_nonces: true,
        ..Default::default()
    })
    .await;
    let certbot = Certbot::issue(&pebble);
    let before = snapshot(&certbot.config_dir);
    let account = certbot.account_dir();
    let regr: Value =
        serde_json::from_str(&std::fs::read_to_string(account.join("regr.json")).unwrap()).unwrap();
    let account_url = regr["uri"].as_str().unwrap().to_owned();

    let run = import(&certbot.config_dir);
    assert_eq!(run.code, 0, "{run:?}");
    println!("--- import certbot output\n{}", run.stdout);
    let live = certbot.live();
    let f = &run.stdout;
    assert!(
        f.contains(&format!("    directory: \"{}\"\n", pebble.directory)),
        "{f}"
    );
    assert!(
        f.contains(&format!("    certbot_account: \"{}\"\n", account.display())),
        "{f}"
    );
    assert!(f.contains(&account_url), "{f}");
    assert!(
        f.contains("    domains: [\"a.example.test\", \"b.example.test\"]\n"),
        "{f}"
    );
    assert!(f.contains("    key: ecdsa-p256\n"), "{f}");
    for (key, file) in [
        ("fullchain", "fullchain.pem"),
        ("privkey", "privkey.pem"),
        ("cert", "cert.pem"),
        ("chain", "chain.pem"),
    ] {
        assert!(
            f.contains(&format!("    {key}: \"{}\"\n", live.join(file).display())),
            "{key}: {f}"
        );
    }
    assert!(
        f.contains("not carried over: authenticator manual with manual_auth_hook `"),
        "{f}"
    );
    assert!(f.contains("`type: exec`"), "{f}");
    assert!(
        f.contains("not carried over: --deploy-hook, kept as renew_hook (reloads a service); certkeeper's equivalent: reload: { command: [\"systemctl\", \"reload\", \"nginx\"] }"),
        "{f}"
    );
    // No key material: the fragment names files, it never holds a key.
    let jwk: Value =
        serde_json::from_str(&std::fs::read_to_string(account.join("private_key.json")).unwrap())
            .unwrap();
    assert!(!f.contains(jwk["d"].as_str().unwrap()), "{f}");
    assert!(!f.contains("PRIVATE KEY"), "{f}");
    assert_eq!(
        snapshot(&certbot.config_dir),
        before,
        "import changed certbot's files"
    );

    // The fragment as printed checks, failing only on the marked placeholder.
    let host = Dir::new();
    let top = config_top(&host, &pebble);
    host.config(&format!("{top}{}", for_pebble(f, &pebble)));
    let check = host.run(&["config", "check", "--no-environment"]);
    assert_eq!(check.code, 2, "{check:?}");
    let problems: Vec<&str> = check.stderr.lines().collect();
    assert!(!problems.is_empty(), "{check:?}");
    for line in &problems {
        assert!(line.contains("FILL-IN-dns-provider"), "{check:?}");
    }
    // Filled in, it checks.
    let filled = for_pebble(f, &pebble).replace("FILL-IN-dns-provider", "hook");
    host.config(&format!("{top}{filled}"));
    let check = host.run(&["config", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stderr.contains("certbot still renews"),
        "the warning about certbot's renewal: {check:?}"
    );
    assert_eq!(snapshot(&certbot.config_dir), before);

    // discover on certbot's directory: the lineage once, under its name, nothing from
    // archive/.
    let watch = Dir::new();
    watch.config(&format!(
        "state_dir: state\nissuers:\n  pebble:\n    type: acme\n    directory: {}\n    trust_roots: {}\ncertificates: []\ndiscover:\n  paths: [\"{}\"]\n",
        pebble.directory,
        pebble.trust_roots.display(),
        certbot.config_dir.display()
    ));
    let (code, entries) = watch.check_json();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(
        entries[0]["name"],
        live.display().to_string(),
        "{entries:#?}"
    );
    assert_eq!(entries[0]["status"], "ok", "{entries:#?}");
    assert_eq!(code, 0, "{entries:#?}");

    // The first renewal orders with certbot's account: no new registration at Pebble.
    let accounts_before = new_accounts(&pebble);
    let renew = host.run(&["renew", "--force"]);
    assert_eq!(renew.code, 0, "{renew:?}\n{}", pebble.logs());
    assert_eq!(new_accounts(&pebble), accounts_before, "{}", pebble.logs());
    assert!(!host.join("state/accounts").exists());
    // certbot's cert.pem and chain.pem follow the renewed pair.
    let first = |p: &std::path::Path| {
        let (certs, _) = certkeeper::x509::read_certificates(&std::fs::read(p).unwrap()).unwrap();
        certs.into_iter().map(|c| c.fingerprint).collect::<Vec<_>>()
    };
    let fullchain = first(&live.join("fullchain.pem"));
    assert_eq!(first(&live.join("cert.pem")), fullchain[..1]);
    assert_eq!(first(&live.join("chain.pem")), fullchain[1..]);
    let check = host.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
}

/// How many accounts Pebble registered so far, from its log.
fn new_accounts(pebble: &Pebble) -> usize {
    pebble.logs().matches("POST /sign-me-up").count()
}

/// A certbot-like tree made by hand: `live/<name>/` links into `archive/<name>/` as certbot
/// makes them, with an old expired version left in `archive/`.
struct Tree {
    dir: Dir,
    pki: Pki,
}

impl Tree {
    fn new() -> Tree {
        let dir = Dir::new();
        let pki = Pki::new("certbot-like");
        dir.write("root.pem", pki.root_pem());
        dir.write(
            "le/live/README",
            "This directory contains your keys and certificates.\n",
        );
        Tree { dir, pki }
    }

    /// A lineage whose live files link to version 1 in archive/, with version 0 expired.
    fn lineage(&self, name: &str) -> crate::util::fixtures::Leaf {
        let old = self.pki.leaf(LeafSpec::new(&[name], -10));
        let leaf = self.pki.leaf(LeafSpec::new(&[name], 60));
        for (n, l) in [(0, &old), (1, &leaf)] {
            let a = |f: &str| format!("le/archive/{name}/{f}{n}.pem");
            self.dir.write(&a("cert"), &l.cert_pem);
            self.dir.write(&a("chain"), &l.intermediate_pem);
            self.dir.write(&a("fullchain"), l.fullchain());
            self.dir.write(&a("privkey"), &l.key_pem);
        }
        std::fs::create_dir_all(self.dir.join(&format!("le/live/{name}"))).unwrap();
        for f in ["cert", "chain", "fullchain", "privkey"] {
            std::os::unix::fs::symlink(
                format!("../../archive/{name}/{f}1.pem"),
                self.dir.join(&format!("le/live/{name}/{f}.pem")),
            )
            .unwrap();
        }
        leaf
    }

    fn config(&self, discover: &str) {
        self.dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  ca:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n    trust_roots: root.pem\n\
             certificates: []\n\
             discover:\n  paths: [{discover}]\n"
        ));
    }
}

fn by_name(entries: &[Value]) -> BTreeMap<String, &Value> {
    entries
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e))
        .collect()
}

#[test]
fn discover_sees_each_certbot_lineage_once_and_skips_archive() {
    let t = Tree::new();
    t.lineage("good.example.test");
    // No chain.pem: fullchain.pem alone is the certificate.
    t.lineage("nochain.example.test");
    std::fs::remove_file(t.dir.join("le/live/nochain.example.test/chain.pem")).unwrap();
    for discover in ["le", "le/live"] {
        t.config(discover);
        let (code, entries) = t.dir.check_json();
        let live = t.dir.join("le/live");
        let names = by_name(&entries);
        assert_eq!(
            names.keys().cloned().collect::<Vec<_>>(),
            vec![
                live.join("good.example.test").display().to_string(),
                live.join("nochain.example.test").display().to_string()
            ],
            "{discover}: {entries:#?}"
        );
        for e in names.values() {
            assert_eq!(e["status"], "ok", "{e:#}");
            assert_eq!(e["chain_length"], 2, "{e:#}");
            assert_eq!(e["key_match"], true, "{e:#}");
        }
        assert_eq!(code, 0, "{entries:#?}");
    }
}

#[test]
fn broken_certbot_lineages_are_named_once_each() {
    let t = Tree::new();
    t.lineage("gone.example.test");
    std::fs::remove_file(t.dir.join("le/archive/gone.example.test/cert1.pem")).unwrap();
    t.lineage("other.example.test");
    let stranger = t.pki.leaf(LeafSpec::new(&["stranger.example.test"], 60));
    t.dir.write(
        "le/archive/other.example.test/fullchain1.pem",
        stranger.fullchain(),
    );
    t.lineage("key.example.test");
    t.dir.write(
        "le/archive/key.example.test/privkey1.pem",
        &stranger.key_pem,
    );
    t.lineage("alone.example.test");
    t.dir.write("le/archive/alone.example.test/chain1.pem", "");
    std::fs::remove_file(t.dir.join("le/live/alone.example.test/fullchain.pem")).unwrap();
    t.config("le");
    let (code, entries) = t.dir.check_json();
    assert_eq!(code, 2, "{entries:#?}");
    let names = by_name(&entries);
    assert_eq!(names.len(), 4, "{entries:#?}");
    let live = t.dir.join("le/live");
    let problems = |name: &str| -> String {
        let e = names[&live.join(name).display().to_string()];
        assert_eq!(e["status"], "critical", "{e:#}");
        e["problems"].to_string()
    };
    assert!(problems("gone.example.test").contains("cert.pem missing"));
    assert!(
        problems("other.example.test")
            .contains("fullchain.pem does not start with the leaf of cert.pem")
    );
    assert!(problems("key.example.test").contains("key mismatch"));
    assert!(problems("alone.example.test").contains("chain"));
}

/// A certbot config dir by hand: renewal configs and live certificates, no account.
fn handmade_config_dir(t: &Tree) {
    t.lineage("good.example.test");
    t.dir.write(
        "le/renewal/good.example.test.conf",
        "version = 1.21.0\n\
         [renewalparams]\n\
         account = 0123abcd\n\
         authenticator = webroot\n\
         server = https://acme-v02.api.letsencrypt.org/directory\n\
         rsa_key_size = 4096\n\
         renew_hook = curl -s https://hooks.example.net/services/T0/SECRETTOKEN\n\
         post_hook = systemctl reload haproxy\n\
         [[webroot_map]]\n\
         good.example.test = /var/www/html\n",
    );
    t.dir.write(
        "le/renewal/bad.example.test.conf",
        "version = 2.1.0\n[renewalparams]\nserver https://ca.test/dir\n",
    );
    t.dir.write(
        "le/renewal/gone.example.test.conf",
        "version = 2.1.0\n[renewalparams]\nserver = https://ca.test/dir\nkey_type = ecdsa\n",
    );
}

#[test]
fn import_reports_each_broken_lineage_on_its_own_line_and_keeps_the_others() {
    let t = Tree::new();
    handmade_config_dir(&t);
    let le = t.dir.join("le");
    let before = snapshot(&le);
    let run = import(&le);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    let bad = le.join("renewal/bad.example.test.conf");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "certkeeper: {}:3: cannot parse \"server https://ca.test/dir\"",
            bad.display()
        ))),
        "{run:?}"
    );
    let gone = le.join("live/gone.example.test/cert.pem");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("certkeeper: {}: cannot read", gone.display()))),
        "{run:?}"
    );
    // The account certbot names is not there: a warning, a new registration.
    assert!(
        lines.iter().any(|l| l.contains("warning: certbot's account for https://acme-v02.api.letsencrypt.org/directory cannot be reused")),
        "{run:?}"
    );
    assert_eq!(lines.len(), 3, "{run:?}");
    let f = &run.stdout;
    assert!(f.contains("  letsencrypt:\n    type: acme\n"), "{f}");
    assert!(f.contains("  - name: \"good.example.test\"\n"), "{f}");
    assert!(
        !f.contains("bad.example.test") && !f.contains("gone.example.test"),
        "{f}"
    );
    assert!(f.contains("    key: rsa-4096\n"), "{f}");
    assert!(
        f.contains("not carried over: authenticator webroot (HTTP-01)"),
        "{f}"
    );
    assert!(
        f.contains("not carried over: post_hook (reloads a service); certkeeper's equivalent: reload: { command: [\"systemctl\", \"reload\", \"haproxy\"] }"),
        "{f}"
    );
    assert!(
        f.contains("not carried over: --deploy-hook, kept as renew_hook"),
        "{f}"
    );
    assert!(
        !f.contains("SECRETTOKEN") && !run.stderr.contains("SECRETTOKEN"),
        "{run:?}"
    );
    assert_eq!(snapshot(&le), before);

    let run = import(&t.dir.join("nowhere"));
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("nowhere/renewal: cannot read: not found; give certbot's configuration directory with --config-dir"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn config_check_warns_only_while_certbot_still_renews_the_lineage() {
    let t = Tree::new();
    handmade_config_dir(&t);
    let live = t.dir.join("le/live/good.example.test");
    let yaml = format!(
        "state_dir: state\n\
         issuers:\n  ca:\n    type: local-ca\n\
         certificates:\n  - name: good\n    domains: [good.example.test]\n    issuer: ca\n    \
         fullchain: {}\n    privkey: {}\n",
        live.join("fullchain.pem").display(),
        live.join("privkey.pem").display()
    );
    t.dir.config(&yaml);
    let run = t.dir.run(&["config", "check", "--no-environment"]);
    assert_eq!(run.code, 0, "{run:?}");
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("certbot still renews"))
        .collect();
    assert_eq!(warnings.len(), 1, "{run:?}");
    assert!(warnings[0].contains("certificates[0].fullchain"), "{run:?}");
    assert!(
        warnings[0].contains("systemctl disable --now certbot.timer"),
        "{run:?}"
    );
    std::fs::remove_file(t.dir.join("le/renewal/good.example.test.conf")).unwrap();
    let run = t.dir.run(&["config", "check", "--no-environment"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("certbot"), "{run:?}");
}
