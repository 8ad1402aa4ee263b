//! Hostile input, round two: providers. A DNS provider's API that answers without bound (a
//! records page of 200,000 records claiming a billion pages, a zones list of 100 MB, 20,000
//! domains a page) or that redirects elsewhere: `config check --online` (exit 2) and `renew`
//! (exit 1) end with one clear line naming the call, under the 2 GiB address-space limit of
//! [`bounded`], with no abort, no secret printed, and nothing sent to the redirect's target.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use certkeeper_dns::testkit::http::{Request, Response, Server};
use certkeeper_dns_aliyun::fake::{self as ali, FakeAlidns};
use certkeeper_dns_cloudflare::fake::{self as cf, FakeCloudflare};

use super::bounded;
use crate::util::pebble::Pebble;
use crate::util::{Dir, Run};

/// A fake provider API in a hostile mode.
enum Fake {
    Cloudflare(FakeCloudflare),
    Aliyun(FakeAlidns),
}

impl Fake {
    fn cloudflare(hostile: cf::Hostile) -> Fake {
        Fake::Cloudflare(FakeCloudflare::start_with(cf::Options {
            zones: vec!["example.com".into()],
            hostile: Some(hostile),
            ..cf::Options::default()
        }))
    }

    fn aliyun(hostile: ali::Hostile) -> Fake {
        Fake::Aliyun(FakeAlidns::start_with(ali::Options {
            domains: vec!["example.com".into()],
            hostile: Some(hostile),
            ..ali::Options::default()
        }))
    }

    /// Requests the fake answered.
    fn requests(&self) -> usize {
        match self {
            Fake::Cloudflare(f) => f.requests().len(),
            Fake::Aliyun(f) => f.requests().len(),
        }
    }
}

/// A config directory for one certificate `www` (www.example.com) from Pebble through the
/// fake, with its secrets in files.
struct Host {
    dir: Dir,
    secrets: Vec<&'static str>,
}

impl Host {
    fn new(pebble: &Pebble, fake: &Fake) -> Host {
        let dir = Dir::new();
        let (provider, secrets) = match fake {
            Fake::Cloudflare(f) => {
                dir.write("secrets/cf-token", cf::TOKEN);
                (
                    format!(
                        "    type: cloudflare\n    api_token_file: secrets/cf-token\n    api_base: \"{}\"\n",
                        f.url()
                    ),
                    vec![cf::TOKEN],
                )
            }
            Fake::Aliyun(f) => {
                dir.write("secrets/ak-id", ali::KEY_ID);
                dir.write("secrets/ak-secret", ali::KEY_SECRET);
                (
                    format!(
                        "    type: aliyun\n    access_key_id_file: secrets/ak-id\n    access_key_secret_file: secrets/ak-secret\n    endpoint: \"{}\"\n",
                        f.url()
                    ),
                    vec![ali::KEY_ID, ali::KEY_SECRET],
                )
            }
        };
        dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  pebble:\n    type: acme\n    directory: {dir}\n    contact: [\"mailto:ops@example.com\"]\n    trust_roots: {roots}\n    max_concurrent_requests: 1\n\
             dns_providers:\n  dns:\n{provider}\
             dns:\n  resolvers: [\"{dns}\"]\n  propagation_timeout: 20s\n  poll_interval: 1s\n\
             certificates:\n  - name: www\n    domains: [www.example.com]\n    issuer: pebble\n    dns_provider: dns\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
            dir = pebble.directory,
            roots = pebble.trust_roots.display(),
            dns = pebble.dns,
        ));
        // Private, as secret files must be (no warning line on stderr).
        for entry in std::fs::read_dir(dir.join("secrets")).unwrap() {
            std::fs::set_permissions(
                entry.unwrap().path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
        }
        Host { dir, secrets }
    }

    /// Runs the binary under [`bounded`]: no abort, no secret in what it printed.
    fn run(&self, args: &[&str]) -> Run {
        let run = tokio::task::block_in_place(|| bounded(&self.dir, "config.yaml", args));
        assert!(
            !run.stderr.contains("memory allocation") && run.code != 134,
            "{args:?} aborted: {run:?}"
        );
        for s in &self.secrets {
            assert!(
                !run.stdout.contains(s) && !run.stderr.contains(s),
                "a secret was printed: {run:?}"
            );
        }
        run
    }

    /// `config check --online`: exit 2, the provider's line says `cause`, and the error is
    /// one line on stderr.
    fn online_fails_with(&self, cause: &str) -> Run {
        let run = self.run(&["config", "check", "--online"]);
        assert_eq!(run.code, 2, "{run:?}");
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with("online dns_providers.dns: FAILED: "))
            .unwrap_or_else(|| panic!("no failed provider line: {run:?}"));
        assert!(
            line.starts_with(
                "online dns_providers.dns: FAILED: creating _certkeeper-check.www.example.com.: "
            ) && line.ends_with(cause),
            "{run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        assert!(
            run.stderr
                .contains("online check failed for dns_providers.dns"),
            "{run:?}"
        );
        run
    }

    /// `renew`: exit 1, `www` failed with `cause`, nothing deployed.
    fn renew_fails_with(&self, cause: &str) -> Run {
        let run = self.run(&["renew"]);
        assert_eq!(run.code, 1, "{run:?}");
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with("www: FAILED: "))
            .unwrap_or_else(|| panic!("www did not fail: {run:?}"));
        assert!(line.contains(cause), "{run:?}");
        assert!(!self.dir.join("live/www/fullchain.pem").exists(), "{run:?}");
        run
    }
}

fn too_large(call: &str) -> String {
    format!(
        "the answer to {call} is larger than 1024 KiB, more than the API ever answers; it was \
         not read further"
    )
}

/// Cloudflare: 200,000 records a page claiming a billion pages aborted both commands at
/// 3.8 GB; a 100 MB zones list took 640 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_answers_without_bound_are_one_line() {
    let pebble = Pebble::start().await;
    // An identical record "exists", and its listing is what never ends.
    let fake = Fake::cloudflare(cf::Hostile::HugeRecordPages {
        per_page: 200_000,
        total_pages: 1_000_000_000,
    });
    let host = Host::new(&pebble, &fake);
    host.online_fails_with(&too_large("GET dns_records"));
    host.renew_fails_with(&too_large("GET dns_records"));

    let fake = Fake::cloudflare(cf::Hostile::HugeZones { count: 500_000 });
    let host = Host::new(&pebble, &fake);
    host.online_fails_with(&too_large("GET zones"));
}

/// Aliyun: 20,000 domains a page over 1,000 pages aborted both commands at 4.0 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_answers_without_bound_are_one_line() {
    let pebble = Pebble::start().await;
    let fake = Fake::aliyun(ali::Hostile::HugeDomainPages {
        per_page: 20_000,
        total: 1_000_000_000,
    });
    let host = Host::new(&pebble, &fake);
    host.online_fails_with(&too_large("DescribeDomains"));
    host.renew_fails_with(&too_large("DescribeDomains"));
}

/// A redirect from either provider's API is a failure naming its status and the target's
/// host, never its path or query; the target receives nothing (for Aliyun, a 307 or 308
/// followed would re-send the signed form with the AccessKey ID).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_redirects_are_not_followed() {
    let pebble = Pebble::start().await;
    let stolen = Arc::new(AtomicUsize::new(0));
    let seen = stolen.clone();
    let thief = Server::start(move |_: &Request| {
        seen.fetch_add(1, Ordering::SeqCst);
        Response::json(200, &serde_json::json!({"RecordId": "1"}))
    });
    let location = format!("{}/secret-path?leak=query", thief.url());
    for status in [302, 307, 308] {
        let fakes = [
            Fake::cloudflare(cf::Hostile::Redirect {
                status,
                location: location.clone(),
            }),
            Fake::aliyun(ali::Hostile::Redirect {
                status,
                location: location.clone(),
            }),
        ];
        for fake in &fakes {
            let host = Host::new(&pebble, fake);
            let run = host.online_fails_with(&format!(
                "the API answered HTTP {status}, a redirect to 127.0.0.1; redirects are not \
                 followed, since the request carries credentials: configure the API's own \
                 address"
            ));
            assert!(
                !run.stdout.contains("secret-path") && !run.stdout.contains("leak"),
                "{run:?}"
            );
            assert_eq!(fake.requests(), 1, "a redirect is not retried: {run:?}");
        }
    }
    assert_eq!(stolen.load(Ordering::SeqCst), 0, "a redirect was followed");
}
