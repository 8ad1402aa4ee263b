//! The Cloudflare and Aliyun providers through the binary, against their fake APIs (which
//! mirror TXT records into pebble-challtestsrv) and real Pebble: an apex + wildcard
//! certificate issued through each; with failures injected into the provider's API the pass
//! succeeds or fails cleanly and no TXT record is left behind; `config check --online` with
//! good and with wrong credentials; and no token or key in any output.

use std::sync::Arc;
use std::time::Instant;

use certkeeper_dns_aliyun::fake::{self as ali, FakeAlidns};
use certkeeper_dns_cloudflare::fake::{self as cf, FakeCloudflare};

use crate::acme::{txt_at, unique_label};
use crate::util::pebble::Pebble;
use crate::util::{Dir, Run};

/// Which fake provider a test drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cloudflare,
    Aliyun,
}

/// A fake provider API, mirroring into the Pebble's challtestsrv.
enum Fake {
    Cloudflare(FakeCloudflare),
    Aliyun(FakeAlidns),
}

impl Fake {
    fn start(kind: Kind, pebble: &Pebble) -> Arc<Fake> {
        Arc::new(match kind {
            Kind::Cloudflare => Fake::Cloudflare(FakeCloudflare::start_with(cf::Options {
                zones: vec!["example.com".into()],
                challtestsrv: Some(pebble.challtestsrv.clone()),
                ..cf::Options::default()
            })),
            Kind::Aliyun => Fake::Aliyun(FakeAlidns::start_with(ali::Options {
                domains: vec!["example.com".into()],
                challtestsrv: Some(pebble.challtestsrv.clone()),
                ..ali::Options::default()
            })),
        })
    }

    fn fail_percent(&self, percent: u64) {
        match self {
            Fake::Cloudflare(f) => f.fail_percent(percent),
            Fake::Aliyun(f) => f.fail_percent(percent),
        }
    }

    fn record_count(&self) -> usize {
        match self {
            Fake::Cloudflare(f) => f.records().len(),
            Fake::Aliyun(f) => f.records().len(),
        }
    }
}

/// A config directory for one certificate `www` (apex + wildcard) issued by Pebble through
/// the fake provider `dns`, with secrets in files.
struct Host {
    dir: Dir,
    apex: String,
    secrets: Vec<String>,
}

impl Host {
    fn new(kind: Kind, pebble: &Pebble, fake: &Fake, good: bool) -> Host {
        let dir = Dir::new();
        let apex = format!("{}.example.com", unique_label("prov"));
        let (provider, secrets) = match (kind, fake) {
            (Kind::Cloudflare, Fake::Cloudflare(f)) => {
                let token = if good {
                    cf::TOKEN
                } else {
                    "wrong-token-0123456789abcdef"
                };
                dir.write("secrets/cf-token", token);
                (
                    format!(
                        "    type: cloudflare\n    api_token_file: secrets/cf-token\n    api_base: \"{}\"\n",
                        f.url()
                    ),
                    vec![token.to_owned()],
                )
            }
            (Kind::Aliyun, Fake::Aliyun(f)) => {
                let secret = if good {
                    ali::KEY_SECRET
                } else {
                    "WrongSecretOfTests000000001"
                };
                dir.write("secrets/ak-id", ali::KEY_ID);
                dir.write("secrets/ak-secret", secret);
                (
                    format!(
                        "    type: aliyun\n    access_key_id_file: secrets/ak-id\n    access_key_secret_file: secrets/ak-secret\n    endpoint: \"{}\"\n",
                        f.url()
                    ),
                    vec![secret.to_owned()],
                )
            }
            _ => unreachable!("the fake matches the kind"),
        };
        let yaml = format!(
            "state_dir: state\n\
             issuers:\n  pebble:\n    type: acme\n    directory: {dir}\n    contact: [\"mailto:ops@example.com\"]\n    trust_roots: {roots}\n    max_concurrent_requests: 1\n\
             dns_providers:\n  dns:\n{provider}\
             dns:\n  resolvers: [\"{dns}\"]\n  propagation_timeout: 20s\n  poll_interval: 1s\n\
             certificates:\n  - name: www\n    domains: [\"{apex}\", \"*.{apex}\"]\n    issuer: pebble\n    dns_provider: dns\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
            dir = pebble.directory,
            roots = pebble.trust_roots.display(),
            dns = pebble.dns,
        );
        dir.config(&yaml);
        Host { dir, apex, secrets }
    }

    /// Runs the binary and asserts that no secret shows in what it printed.
    fn run(&self, args: &[&str]) -> Run {
        let run = self.dir.run(args);
        for s in &self.secrets {
            assert!(
                !run.stdout.contains(s.as_str()) && !run.stderr.contains(s.as_str()),
                "a secret was printed: {run:?}"
            );
        }
        run
    }
}

/// Issues `www` through `kind`: the pass succeeds, the chain checks out, and no record is
/// left at the fake or in challtestsrv. Prints the pass's wall time.
async fn issue_through(kind: Kind) {
    let pebble = Pebble::start().await;
    let fake = Fake::start(kind, &pebble);
    let host = Host::new(kind, &pebble, &fake, true);
    let started = Instant::now();
    let run = tokio::task::block_in_place(|| host.run(&["renew"]));
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from pebble"),
        "{run:?}"
    );
    println!("bench issuance through {kind:?} (apex + wildcard, one pass): {took:.2?}");
    let check = tokio::task::block_in_place(|| host.run(&["check", "--json"]));
    let entries: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    assert_eq!(entries[0]["status"], "ok", "{check:?}");
    assert_eq!(fake.record_count(), 0, "records left at the provider");
    let name = format!("_acme-challenge.{}.", host.apex);
    assert!(
        txt_at(&pebble, &name).await.is_empty(),
        "records left in DNS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apex_and_wildcard_certificate_through_cloudflare() {
    issue_through(Kind::Cloudflare).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apex_and_wildcard_certificate_through_aliyun() {
    issue_through(Kind::Aliyun).await;
}

/// With 30% of the provider's requests failing (429 and 5xx, spread evenly), the pass either
/// renews or fails with a clear error, and in both cases leaves no record behind.
async fn survive_failures(kind: Kind) {
    let pebble = Pebble::start().await;
    let fake = Fake::start(kind, &pebble);
    let host = Host::new(kind, &pebble, &fake, true);
    fake.fail_percent(30);
    let run = tokio::task::block_in_place(|| host.run(&["renew"]));
    fake.fail_percent(0);
    match run.code {
        0 => assert!(
            run.stdout.starts_with("www: renewed from pebble"),
            "{run:?}"
        ),
        1 => assert!(run.stdout.starts_with("www: FAILED: "), "{run:?}"),
        _ => panic!("neither renewed nor failed cleanly: {run:?}"),
    }
    println!("with injected failures through {kind:?}: exit {}", run.code);
    assert_eq!(
        fake.record_count(),
        0,
        "records left at the provider: {run:?}"
    );
    let name = format!("_acme-challenge.{}.", host.apex);
    assert!(
        txt_at(&pebble, &name).await.is_empty(),
        "records left in DNS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_cloudflare_failures_leave_no_record_behind() {
    survive_failures(Kind::Cloudflare).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_aliyun_failures_leave_no_record_behind() {
    survive_failures(Kind::Aliyun).await;
}

/// `config check --online`: good credentials create and remove the check record and reach
/// the directory; wrong ones exit 2 naming the provider by its key.
async fn online_check(kind: Kind) {
    let pebble = Pebble::start().await;
    let fake = Fake::start(kind, &pebble);
    let host = Host::new(kind, &pebble, &fake, true);
    let run = tokio::task::block_in_place(|| host.run(&["config", "check", "--online"]));
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "online dns_providers.dns: ok: created and removed _certkeeper-check.{}.",
            host.apex
        )),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(&format!(
            "online issuers.pebble: ok: directory {} answers; renewal information (ARI): not offered; profiles: none",
            pebble.directory
        )),
        "{run:?}"
    );
    assert_eq!(fake.record_count(), 0);

    let wrong = Host::new(kind, &pebble, &fake, false);
    let run = tokio::task::block_in_place(|| wrong.run(&["config", "check", "--online"]));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains("online dns_providers.dns: FAILED: "),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains("online check failed for dns_providers.dns"),
        "{run:?}"
    );
    assert_eq!(fake.record_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_online_through_cloudflare() {
    online_check(Kind::Cloudflare).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_online_through_aliyun() {
    online_check(Kind::Aliyun).await;
}
