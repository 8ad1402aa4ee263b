//! `certkeeper renew` and `check` through the real binary against real Pebble and
//! pebble-challtestsrv: issuance over DNS-01 through an exec hook, ten certificates in one
//! pass, account reuse, renewal of a due certificate with a snapshot, and the failure paths
//! (records never visible, CA unreachable) that leave live pairs untouched and the others
//! renewed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::acme::{txt_at, unique_label};
use crate::util::fixtures::{LeafSpec, Pki};
use crate::util::pebble::{Pebble, free_tcp_port};
use crate::util::{Dir, Run};

/// A host whose certkeeper talks to `pebble`, with a publishing hook and a silent one.
pub(crate) struct Host {
    pub(crate) dir: Dir,
    pub(crate) hook_log: PathBuf,
    pub(crate) zone: String,
}

impl Host {
    pub(crate) fn new(pebble: &Pebble) -> Host {
        let dir = Dir::new();
        let hook_log = dir.join("hook.log");
        write_hook(
            &dir.join("hooks/publish"),
            &hook_log,
            Some(&pebble.challtestsrv),
        );
        write_hook(&dir.join("hooks/silent"), &hook_log, None);
        Host {
            dir,
            hook_log,
            zone: format!("{}.certkeeper-test.example.com", unique_label("cli")),
        }
    }

    pub(crate) fn name(&self, label: &str) -> String {
        format!("{label}.{}", self.zone)
    }

    /// Writes the config: `certs` as (name, issuer, dns provider, key, extra yaml).
    pub(crate) fn config(
        &self,
        pebble: &Pebble,
        before_expiry: &str,
        certs: &[(&str, &str, &str, &str)],
    ) {
        let mut yaml = format!(
            "state_dir: state\n\
             issuers:\n  pebble:\n    type: acme\n    directory: {dir}\n    contact: [\"mailto:ops@example.com\"]\n    trust_roots: {roots}\n    max_concurrent_requests: 1\n  \
             down:\n    type: acme\n    directory: https://127.0.0.1:{closed}/dir\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [hooks/publish]\n    timeout: 20s\n  \
             silent:\n    type: exec\n    command: [hooks/silent]\n\
             dns:\n  resolvers: [\"{dns}\"]\n  propagation_timeout: 3s\n  poll_interval: 1s\n\
             renewal:\n  before_expiry: {before_expiry}\n  concurrency: 10\n\
             certificates:\n",
            dir = pebble.directory,
            roots = pebble.trust_roots.display(),
            closed = free_tcp_port(),
            dns = pebble.dns,
        );
        for (label, issuer, dns, key) in certs {
            let apex = self.name(label);
            yaml.push_str(&format!(
                "  - name: {label}\n    domains: [\"{apex}\", \"*.{apex}\"]\n    issuer: {issuer}\n    dns_provider: {dns}\n    key: {key}\n    \
                 fullchain: live/{label}/fullchain.pem\n    privkey: live/{label}/privkey.pem\n"
            ));
        }
        self.dir.config(&yaml);
    }

    fn run(&self, args: &[&str]) -> Run {
        self.dir.run(args)
    }

    fn check(&self) -> (i32, Vec<Value>) {
        self.dir.check_json()
    }

    pub(crate) fn hook_calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

/// A DNS hook as a user writes one: `present|cleanup FQDN VALUE`. With a challtestsrv URL
/// it publishes there (python3, present on a fresh Debian system); without, it only logs.
pub(crate) fn write_hook(path: &Path, log: &Path, challtestsrv: Option<&str>) {
    let publish = match challtestsrv {
        Some(base) => format!(
            r#"python3 - "$@" <<'PY'
import json, sys, urllib.request
action, fqdn, value = sys.argv[1:4]
path, body = ("set-txt", {{"host": fqdn, "value": value}}) if action == "present" else ("clear-txt", {{"host": fqdn}})
req = urllib.request.Request("{base}/" + path, data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(req, timeout=10).read()
PY
"#
        ),
        None => String::new(),
    };
    let script = format!(
        "#!/bin/sh\nset -e\necho \"$0 $1 $2\" >> '{}'\n{publish}",
        log.display()
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The same hook in POSIX sh with curl: what the benchmark gives every tool by default, so
/// that a Python interpreter's start (about 0.3 s a call, four calls a certificate) does not
/// drown what the tools themselves cost.
fn write_curl_hook(path: &Path, log: &Path, challtestsrv: &str) {
    let script = format!(
        "#!/bin/sh
set -e
echo \"$0 $1 $2\" >> '{log}'
         if [ \"$1\" = present ]; then
             curl -sf -X POST -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" '{base}/set-txt' >/dev/null
         else
             curl -sf -X POST -d \"{{\\\"host\\\":\\\"$2\\\"}}\" '{base}/clear-txt' >/dev/null
         fi
",
        log = log.display(),
        base = challtestsrv,
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_issues_ten_certificates_then_renews_a_due_one() {
    let pebble = Pebble::start().await;
    let host = Host::new(&pebble);
    let keys = ["ecdsa-p256", "ecdsa-p384", "rsa-2048"];
    let labels: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let certs: Vec<(&str, &str, &str, &str)> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), "pebble", "hook", keys[i % 3]))
        .collect();
    host.config(&pebble, "30d", &certs);

    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", pebble.logs());
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.contains(": renewed from pebble"))
            .count(),
        10,
        "{run:?}"
    );
    // Every chain verifies against Pebble's root (in trust_roots), keys match, names covered.
    let (code, entries) = host.check();
    assert_eq!(code, 0, "{entries:#?}");
    assert!(
        entries
            .iter()
            .all(|e| e["status"] == "ok" && e["integrity"] == true && e["chain_length"] == 2)
    );
    // Every record that was published was removed again.
    let calls = host.hook_calls();
    assert_eq!(
        calls.iter().filter(|c| c.contains(" present ")).count(),
        20,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| c.contains(" cleanup ")).count(),
        20,
        "{calls:?}"
    );
    let record = format!("_acme-challenge.{}.", host.name("c0"));
    assert!(txt_at(&pebble, &record).await.is_empty());

    // The account was created once; the next pass reuses it.
    let account = std::fs::read_dir(host.dir.join("state/accounts/pebble"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let account_bytes = std::fs::read(&account).unwrap();
    assert_eq!(
        std::fs::metadata(&account).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.contains(": not due"))
            .count(),
        10,
        "{run:?}"
    );
    assert_eq!(std::fs::read(&account).unwrap(), account_bytes);

    // Pebble's certificates live 5 years: a before_expiry longer than that makes c0 due.
    let before = host.check().1[0]["fingerprint"].clone();
    host.config(&pebble, "2000d", &certs[..1]);
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("c0: renewed from pebble"), "{run:?}");
    assert!(
        run.stdout.contains("previous pair kept as snapshot 000001"),
        "{run:?}"
    );
    let (code, entries) = host.check();
    // Still due by that before_expiry (warning), and a new, sound pair.
    assert_eq!(code, 1, "{entries:#?}");
    assert_ne!(entries[0]["fingerprint"], before);
    assert_eq!(entries[0]["integrity"], true);
    let snaps = host.run(&["snapshots", "--json", "c0"]);
    let snaps: Vec<Value> = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(snaps[0]["fingerprint"], before);
    assert_eq!(std::fs::read(&account).unwrap(), account_bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_leave_live_pairs_alone_and_do_not_stop_the_others() {
    let pebble = Pebble::start().await;
    let host = Host::new(&pebble);
    // `quiet` already has a live pair (from elsewhere, due): it must survive untouched.
    let other = Pki::new("Elsewhere");
    let apex = host.name("quiet");
    let wildcard = format!("*.{apex}");
    let leaf = other.leaf(LeafSpec::new(&[apex.as_str(), wildcard.as_str()], 5));
    host.dir.write("live/quiet/fullchain.pem", leaf.fullchain());
    host.dir.write("live/quiet/privkey.pem", &leaf.key_pem);
    host.config(
        &pebble,
        "30d",
        &[
            ("good", "pebble", "hook", "ecdsa-p256"),
            ("quiet", "pebble", "silent", "ecdsa-p256"),
            ("nowhere", "down", "hook", "ecdsa-p256"),
        ],
    );
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert!(lines[0].starts_with("good: renewed from pebble"), "{run:?}");
    assert!(
        lines[1].starts_with("quiet: FAILED: issuer pebble: "),
        "{run:?}"
    );
    assert!(lines[1].contains("_acme-challenge."), "{run:?}");
    assert!(
        lines[2].starts_with("nowhere: FAILED: issuer down: "),
        "{run:?}"
    );
    // The live pair of the failed certificate is byte for byte what it was.
    assert_eq!(
        std::fs::read_to_string(host.dir.join("live/quiet/fullchain.pem")).unwrap(),
        leaf.fullchain()
    );
    assert_eq!(
        std::fs::read_to_string(host.dir.join("live/quiet/privkey.pem")).unwrap(),
        leaf.key_pem
    );
    assert!(!host.dir.join("live/nowhere").exists());
    assert!(!host.dir.join("state/pending/quiet").exists());
    // The silent hook was asked to clean up everything it was asked to present.
    let calls = host.hook_calls();
    let silent: Vec<&String> = calls.iter().filter(|c| c.contains("silent")).collect();
    let presents = silent.iter().filter(|c| c.contains(" present ")).count();
    assert!(presents >= 1, "{calls:?}");
    assert_eq!(
        silent.iter().filter(|c| c.contains(" cleanup ")).count(),
        presents,
        "{calls:?}"
    );
    let (_, entries) = host.check();
    assert_eq!(entries[0]["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_orders_only_from_a_staging_ca_and_changes_nothing() {
    let pebble = Pebble::start().await;
    let host = Host::new(&pebble);
    host.config(&pebble, "30d", &[("dry", "pebble", "hook", "ecdsa-p256")]);
    let before = listing(host.dir.path());

    // Without a staging_directory: it says what it would order and orders nothing.
    let run = host.run(&["renew", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with(&format!(
            "dry: due; would order {apex}, *.{apex} from pebble; dry run without a staging_directory for pebble, so nothing was ordered",
            apex = host.name("dry")
        )),
        "{run:?}"
    );
    assert!(host.hook_calls().is_empty(), "{:?}", host.hook_calls());

    // With one: the order goes to the staging CA (Pebble here) and never to production (a
    // closed port here, which would fail the order if it were asked).
    let yaml = std::fs::read_to_string(host.dir.join("config.yaml")).unwrap();
    let production = format!("https://127.0.0.1:{}/dir", free_tcp_port());
    let yaml = yaml.replacen(
        &format!("    directory: {}\n", pebble.directory),
        &format!(
            "    directory: {production}\n    staging_directory: {}\n",
            pebble.directory
        ),
        1,
    );
    host.dir.config(&yaml);
    let before: std::collections::BTreeSet<String> = before.into_iter().collect();
    let run = host.run(&["renew", "--dry-run", "-v"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("dry: would renew from pebble"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("ordering from the staging CA"),
        "{run:?}"
    );
    assert!(
        host.hook_calls().iter().any(|c| c.contains(" present ")),
        "{:?}",
        host.hook_calls()
    );
    // Only the hook's own log (outside certkeeper's control) may have appeared.
    let after: std::collections::BTreeSet<String> = listing(host.dir.path())
        .into_iter()
        .filter(|p| !p.ends_with("hook.log"))
        .collect();
    assert_eq!(before, after);
}

fn listing(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        out.push(p.display().to_string());
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// Benchmark (bench/renew.sh): wall time of getting 1 and 10 certificates (apex + wildcard
/// each) from one Pebble with `certkeeper renew` (one pass), `lego run` and `certbot
/// certonly` (one command per certificate, as they are used), all through the same
/// challtestsrv-publishing hook, printed with the ratio to certkeeper.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run by bench/renew.sh"]
async fn bench_renew_against_lego_and_certbot() {
    let pebble = Pebble::start().await;
    let bin = |name: &str| {
        which(name).unwrap_or_else(|| {
            panic!("{name} is needed for the comparison: apt-get install -y lego certbot")
        })
    };
    let (lego, certbot) = (bin("lego"), bin("certbot"));
    // BENCH_HOOK=python gives every tool the Python hook of the tests instead of curl's.
    let python = std::env::var("BENCH_HOOK").is_ok_and(|h| h == "python");
    println!(
        "bench certs  tool        seconds  vs certkeeper   (hook: {})",
        if python { "python3" } else { "sh + curl" }
    );
    for n in [1usize, 10, 50] {
        // certkeeper: one pass for all n.
        let host = Host::new(&pebble);
        let hook = if python {
            host.dir.join("hooks/publish")
        } else {
            let curl = host.dir.join("hooks/curl");
            write_curl_hook(&curl, &host.hook_log, &pebble.challtestsrv);
            curl
        };
        let labels: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let certs: Vec<(&str, &str, &str, &str)> = labels
            .iter()
            .map(|l| (l.as_str(), "pebble", "hook", "ecdsa-p256"))
            .collect();
        host.config(&pebble, "30d", &certs);
        let yaml = std::fs::read_to_string(host.dir.join("config.yaml"))
            .unwrap()
            .replace(
                "command: [hooks/publish]",
                &format!("command: [\"{}\"]", hook.display()),
            );
        host.dir.config(&yaml);
        let t = std::time::Instant::now();
        let run = host.run(&["renew"]);
        let ours = t.elapsed().as_secs_f64();
        assert_eq!(run.code, 0, "{run:?}");
        if n > 10 {
            // lego and certbot one by one would take many minutes here; the ratio of ten
            // says enough about them.
            println!("bench {n:>5}  certkeeper {ours:>8.3}  {:>12.2}x", 1.0);
            continue;
        }

        // lego: one `run` per certificate, sharing one account directory.
        let lego_dir = Dir::new();
        let t = std::time::Instant::now();
        for i in 0..n {
            let apex = format!("l{i}.{}", host.zone);
            let out = std::process::Command::new(&lego)
                .args([
                    "--accept-tos",
                    "--email",
                    "ops@example.com",
                    "--server",
                    &pebble.directory,
                ])
                .arg("--path")
                .arg(lego_dir.path())
                .args([
                    "--dns",
                    "exec",
                    "--dns.disable-cp",
                    "--dns.resolvers",
                    &pebble.dns.to_string(),
                ])
                .args(["--domains", &apex, "--domains", &format!("*.{apex}"), "run"])
                .env("EXEC_PATH", &hook)
                .env("EXEC_POLLING_INTERVAL", "1")
                .env("EXEC_PROPAGATION_TIMEOUT", "30")
                // lego waits 60 s between the apex and wildcard records of one name by
                // default; 1 s measures its work rather than that pause.
                .env("EXEC_SEQUENCE_INTERVAL", "1")
                .env("LEGO_CA_CERTIFICATES", &pebble.trust_roots)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "lego: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let lego_s = t.elapsed().as_secs_f64();

        // certbot: one `certonly` per certificate, manual DNS hooks doing the same publishing.
        let cb = Dir::new();
        let auth = cb.write(
            "auth",
            format!(
                "#!/bin/sh\nexec '{}' present \"_acme-challenge.$CERTBOT_DOMAIN.\" \"$CERTBOT_VALIDATION\"\n",
                hook.display()
            ),
        );
        let cleanup = cb.write(
            "cleanup",
            format!(
                "#!/bin/sh\nexec '{}' cleanup \"_acme-challenge.$CERTBOT_DOMAIN.\" \"$CERTBOT_VALIDATION\"\n",
                hook.display()
            ),
        );
        for f in [&auth, &cleanup] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let t = std::time::Instant::now();
        for i in 0..n {
            let apex = format!("b{i}.{}", host.zone);
            let out = std::process::Command::new(&certbot)
                .args([
                    "certonly",
                    "--non-interactive",
                    "--agree-tos",
                    "-m",
                    "ops@example.com",
                ])
                .args([
                    "--server",
                    &pebble.directory,
                    "--manual",
                    "--preferred-challenges",
                    "dns",
                ])
                .arg("--manual-auth-hook")
                .arg(&auth)
                .arg("--manual-cleanup-hook")
                .arg(&cleanup)
                .args(["-d", &apex, "-d", &format!("*.{apex}")])
                .arg("--config-dir")
                .arg(cb.join("config"))
                .arg("--work-dir")
                .arg(cb.join("work"))
                .arg("--logs-dir")
                .arg(cb.join("logs"))
                .env("REQUESTS_CA_BUNDLE", &pebble.trust_roots)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "certbot: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let certbot_s = t.elapsed().as_secs_f64();
        for (tool, s) in [
            ("certkeeper", ours),
            ("lego", lego_s),
            ("certbot", certbot_s),
        ] {
            println!("bench {n:>5}  {tool:<10} {s:>8.3}  {:>12.2}x", s / ours);
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}
