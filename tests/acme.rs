//! ACME issuance against a real Pebble and pebble-challtestsrv: DNS-01 through providers that
//! publish real DNS answers, accounts stored and reused, chains checked against Pebble's root,
//! and the failure paths (records never visible, CA unreachable or failing, cancellation),
//! each showing that no challenge record is left behind.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use certkeeper::acme::{self, Acme, Backoff, Error, Issued, OrderRequest, Proof, Tuning};
use certkeeper::config::{DnsSettings, KeyType};
use certkeeper::store::StateDir;
use certkeeper::x509::{self, PrivateKey, TrustStore};
use certkeeper_dns::DnsProvider;
use certkeeper_dns::retry::{Jitter, RetryAfter};
use certkeeper_dns_exec::ExecProvider;
use time::OffsetDateTime;

use crate::util::Dir;
use crate::util::challtestsrv::ChallTestSrv;
use crate::util::pebble::{Options, Pebble, free_tcp_port};

#[tokio::test]
async fn issues_a_certificate_for_one_name() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = open(&pebble, state.path()).await;
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let domain = unique("one");

    let (issued, key) = issue(&acme, &pebble, &[&domain], KeyType::EcdsaP256, dns.clone()).await;

    check_chain(&pebble, &issued, &key, &[&domain]);
    let name = format!("_acme-challenge.{domain}.");
    assert_eq!(
        dns.calls(),
        [format!("present {name}"), format!("cleanup {name}")]
    );
    assert!(dns.live().await.is_empty());
    assert!(
        txt_at(&pebble, &name).await.is_empty(),
        "the record is still served"
    );
}

#[tokio::test]
async fn apex_and_wildcard_share_one_record_name_with_two_values() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = open(&pebble, state.path()).await;
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let apex = unique("wild");
    let wildcard = format!("*.{apex}");

    let (issued, key) = issue(
        &acme,
        &pebble,
        &[&apex, &wildcard],
        KeyType::EcdsaP256,
        dns.clone(),
    )
    .await;

    check_chain(&pebble, &issued, &key, &[&apex, &wildcard]);
    let name = format!("_acme-challenge.{apex}.");
    let presents: Vec<String> = dns
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("present"))
        .collect();
    assert_eq!(
        presents,
        [format!("present {name}"), format!("present {name}")]
    );
    assert!(dns.live().await.is_empty());
    assert!(txt_at(&pebble, &name).await.is_empty());
}

#[tokio::test]
async fn issues_for_every_key_type() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = Arc::new(open(&pebble, state.path()).await);
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let pebble = Arc::new(pebble);
    let mut tasks = tokio::task::JoinSet::new();
    for (name, kind) in KeyType::NAMES {
        let (acme, dns, pebble) = (acme.clone(), dns.clone(), pebble.clone());
        tasks.spawn(async move {
            let domain = unique(name);
            let (issued, key) = issue(&acme, &pebble, &[&domain], kind, dns).await;
            check_chain(&pebble, &issued, &key, &[&domain]);
            let leaf = leaf_of(&issued);
            let algorithm = PrivateKey::from_bytes(key.serialize_pem().as_bytes())
                .unwrap()
                .algorithm;
            (name, algorithm, leaf.sans)
        });
    }
    let mut seen = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (name, algorithm, _) = done.unwrap();
        let expected = if name.starts_with("rsa") { "rsa" } else { name };
        assert_eq!(algorithm, expected, "{name}");
        seen.push(name);
    }
    assert_eq!(seen.len(), KeyType::NAMES.len());
    assert!(dns.live().await.is_empty());
}

#[tokio::test]
async fn ten_certificates_at_once_on_one_account() {
    let pebble = Arc::new(Pebble::start().await);
    let state = Dir::new();
    let acme = Arc::new(open(&pebble, state.path()).await);
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (acme, dns, pebble) = (acme.clone(), dns.clone(), pebble.clone());
        tasks.spawn(async move {
            let domain = unique(&format!("many{i}"));
            let (issued, key) = issue(&acme, &pebble, &[&domain], KeyType::EcdsaP256, dns).await;
            check_chain(&pebble, &issued, &key, &[&domain]);
            leaf_of(&issued).fingerprint
        });
    }
    let mut leaves = Vec::new();
    while let Some(done) = tasks.join_next().await {
        leaves.push(done.unwrap());
    }
    leaves.sort();
    leaves.dedup();
    assert_eq!(leaves.len(), 10, "ten distinct certificates");
    assert!(dns.live().await.is_empty());
}

#[tokio::test]
async fn the_account_is_created_once_stored_private_and_reused() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let issuer = pebble.issuer();

    let first = Acme::open("pebble", &issuer, &StateDir::open(state.path()).unwrap())
        .await
        .unwrap();
    assert!(first.created());
    let file = state.join("accounts/pebble/account.json");
    assert_eq!(first.account_file(), Some(file.as_path()));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&state.join("accounts/pebble")), 0o700);
    assert_eq!(mode(&state.join("accounts")), 0o700);
    let stored = std::fs::read(&file).unwrap();
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    // The stored file holds the key, never shown in Debug output.
    assert!(!format!("{first:?}").contains("key_pkcs8"));

    let second = Acme::open("pebble", &issuer, &StateDir::open(state.path()).unwrap())
        .await
        .unwrap();
    assert!(
        !second.created(),
        "a second open must not create an account"
    );
    assert_eq!(second.account_id(), first.account_id());
    assert_eq!(std::fs::read(&file).unwrap(), stored);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );
    let entries: Vec<_> = std::fs::read_dir(state.join("accounts/pebble"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["account.json"], "no temporary files left");

    // The reloaded account is the CA's: it can order.
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let domain = unique("reused");
    let (issued, key) = issue(&second, &pebble, &[&domain], KeyType::EcdsaP256, dns).await;
    check_chain(&pebble, &issued, &key, &[&domain]);
}

#[tokio::test]
async fn a_dry_run_account_is_never_written() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = Acme::open(
        "pebble",
        &pebble.issuer(),
        &StateDir::read_only(state.path()),
    )
    .await
    .unwrap();
    assert!(acme.created());
    assert_eq!(acme.account_file(), None);
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
    // It still works for a whole order.
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let domain = unique("dry");
    issue(&acme, &pebble, &[&domain], KeyType::EcdsaP256, dns).await;
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn external_account_binding_is_sent() {
    let pebble = Pebble::start_with(Options {
        eab: true,
        ..Default::default()
    })
    .await;
    let state = Dir::new();
    // Without EAB, a CA that requires it refuses.
    let err = Acme::open(
        "pebble",
        &pebble.issuer(),
        &StateDir::open(state.path()).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Refused { kind: Some(k), .. } if k.ends_with("externalAccountRequired")),
        "{err:?}"
    );
    assert!(!state.join("accounts/pebble/account.json").exists());
    // With it, the account is created, and the HMAC key shows nowhere.
    let acme = Acme::open(
        "pebble",
        &pebble.issuer_with_eab(),
        &StateDir::open(state.path()).unwrap(),
    )
    .await
    .unwrap();
    assert!(acme.created());
    let stored = std::fs::read_to_string(state.join("accounts/pebble/account.json")).unwrap();
    assert!(!stored.contains(crate::util::pebble::EAB_HMAC));
}

#[tokio::test]
async fn records_never_visible_time_out_and_are_removed() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = open(&pebble, state.path()).await;
    let dns = Arc::new(ChallTestSrv::not_publishing(&pebble.challtestsrv));
    let domain = unique("invisible");
    let settings = DnsSettings {
        propagation_timeout: Duration::from_millis(1500),
        poll_interval: Duration::from_millis(200),
        ..pebble.settings()
    };
    let key = certkeeper::keys::generate(KeyType::EcdsaP256).unwrap();
    let domains = vec![domain.clone()];
    let started = Instant::now();
    let err = acme
        .issue(&OrderRequest {
            domains: &domains,
            csr_der: certkeeper::keys::csr_der(&key, &domains).unwrap(),
            profile: None,
            replaces: None,
            proof: Proof::Dns01 {
                dns: dns.clone(),
                dns_name: "challtestsrv",
            },
            settings: &settings,
            track: None,
        })
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let name = format!("_acme-challenge.{domain}.");
    match &err {
        Error::Dns(acme::dns01::Error::PropagationTimeout {
            provider,
            fqdn,
            servers,
            ..
        }) => {
            assert_eq!(provider, "challtestsrv");
            assert_eq!(fqdn, &name);
            assert_eq!(servers, &[pebble.dns]);
        }
        other => panic!("expected a propagation timeout, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "TXT {name} with the challenge value was not visible at {} within ",
            pebble.dns
        )),
        "{text}"
    );
    assert!(text.contains("raise dns.propagation_timeout"), "{text}");
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    // Gave up at the 1.5 s propagation timeout, with a wide margin for a loaded machine.
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    assert_eq!(
        dns.calls(),
        [format!("present {name}"), format!("cleanup {name}")]
    );
    assert!(dns.live().await.is_empty());
}

#[tokio::test]
async fn a_cancelled_order_still_removes_its_records() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = open(&pebble, state.path()).await;
    // Published for real, but the check looks at a server that never sees it (challtestsrv
    // only answers for what it holds; a second instance is empty), so the order waits.
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let other = Pebble::start().await;
    let settings = DnsSettings {
        resolvers: vec![other.dns],
        propagation_timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(100),
    };
    let domain = unique("cancel");
    let domains = vec![domain.clone()];
    let key = certkeeper::keys::generate(KeyType::EcdsaP256).unwrap();
    let req = OrderRequest {
        domains: &domains,
        csr_der: certkeeper::keys::csr_der(&key, &domains).unwrap(),
        profile: None,
        replaces: None,
        proof: Proof::Dns01 {
            dns: dns.clone(),
            dns_name: "challtestsrv",
        },
        settings: &settings,
        track: None,
    };
    let outcome = tokio::time::timeout(Duration::from_secs(2), acme.issue(&req)).await;
    assert!(outcome.is_err(), "the order should still be waiting");
    let name = format!("_acme-challenge.{domain}.");
    assert!(dns.calls().contains(&format!("present {name}")));
    // The removal runs in the background after the drop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dns.live().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "records left: {:?}",
            dns.live().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dns.calls().contains(&format!("cleanup {name}")));
    assert!(txt_at(&pebble, &name).await.is_empty());
}

#[tokio::test]
async fn a_cname_on_the_challenge_name_is_followed() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = open(&pebble, state.path()).await;
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let domain = unique("aliased");
    let name = format!("_acme-challenge.{domain}.");
    let target = format!("{}.acme-delegated.example.net.", unique_label("target"));
    dns.set_cname(&name, &target).await;

    let (issued, key) = issue(&acme, &pebble, &[&domain], KeyType::EcdsaP256, dns.clone()).await;

    check_chain(&pebble, &issued, &key, &[&domain]);
    assert_eq!(
        dns.calls(),
        [format!("present {target}"), format!("cleanup {target}")]
    );
    assert!(dns.live().await.is_empty());
}

#[tokio::test]
async fn the_exec_provider_issues_end_to_end() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = open(&pebble, state.path()).await;
    let hooks = Dir::new();
    let log = hooks.join("calls.log");
    // What a user's hook looks like: present/cleanup FQDN VALUE, talking to a DNS API (here
    // challtestsrv's) with python3, which a fresh Debian system has (curl may be missing).
    let hook = hooks.write(
        "dns-hook",
        format!(
            r#"#!/bin/sh
set -e
echo "$1 $2" >> '{log}'
python3 - "$@" <<'EOF'
import json, sys, urllib.request
action, fqdn, value = sys.argv[1:4]
path, body = ("set-txt", {{"host": fqdn, "value": value}}) if action == "present" else ("clear-txt", {{"host": fqdn}})
req = urllib.request.Request("{base}/" + path, data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(req, timeout=10).read()
EOF
"#,
            log = log.display(),
            base = pebble.challtestsrv
        ),
    );
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dns = Arc::new(
        ExecProvider::new(vec![hook.display().to_string()], Duration::from_secs(20)).unwrap(),
    );
    let domain = unique("exec");

    let (issued, key) = issue(&acme, &pebble, &[&domain], KeyType::EcdsaP256, dns).await;

    check_chain(&pebble, &issued, &key, &[&domain]);
    let name = format!("_acme-challenge.{domain}.");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("present {name}\ncleanup {name}\n")
    );
    assert!(txt_at(&pebble, &name).await.is_empty());
}

#[tokio::test]
async fn a_failing_exec_hook_fails_the_order_with_its_stderr() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = open(&pebble, state.path()).await;
    let hooks = Dir::new();
    let hook = hooks.write(
        "dns-hook",
        "#!/bin/sh\necho \"zone for $2 not managed by this account\" >&2\nexit 2\n",
    );
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dns = Arc::new(
        ExecProvider::new(vec![hook.display().to_string()], Duration::from_secs(20)).unwrap(),
    );
    let domain = unique("hookfail");
    let domains = vec![domain.clone()];
    let key = certkeeper::keys::generate(KeyType::EcdsaP256).unwrap();
    let err = acme
        .issue(&OrderRequest {
            domains: &domains,
            csr_der: certkeeper::keys::csr_der(&key, &domains).unwrap(),
            profile: None,
            replaces: None,
            proof: Proof::Dns01 {
                dns,
                dns_name: "hook",
            },
            settings: &pebble.settings(),
            track: None,
        })
        .await
        .unwrap_err();
    let name = format!("_acme-challenge.{domain}.");
    assert_eq!(
        err.to_string(),
        format!(
            "dns provider hook could not create TXT {name}: present hook exited with status 2\n\
             ---------- stderr ----------\n\
             zone for {name} not managed by this account\n\
             ----------------------------"
        )
    );
}

#[tokio::test]
async fn an_unreachable_ca_is_a_clear_error() {
    let state = Dir::new();
    let url = format!("https://127.0.0.1:{}/dir", free_tcp_port());
    let issuer = certkeeper::config::AcmeIssuer {
        directory: url.clone(),
        contact: vec![],
        trust_roots: Vec::new(),
        eab: None,
        staging_directory: None,
        max_concurrent_requests: None,
        orders_per_minute: None,
        certbot_account: None,
    };
    let started = Instant::now();
    let err = Acme::open_with(
        "down",
        &issuer,
        &StateDir::open(state.path()).unwrap(),
        quick(3),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it retried"
    );
    let Error::Unreachable {
        step,
        reason,
        attempts,
    } = &err
    else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert_eq!((*step, *attempts), ("directory", 3));
    assert!(reason.starts_with(&url), "{reason}");
    assert!(reason.contains("Connection refused"), "{reason}");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot reach the ACME server during directory: {url}: "
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_failing_ca_is_retried_honouring_retry_after_and_its_answer_kept() {
    // A CA behind a proxy that keeps answering 503 with an HTML page and Retry-After: 1.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/dir", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let body = "<html><body>upstream overloaded</body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let issuer = certkeeper::config::AcmeIssuer {
        directory: url.clone(),
        contact: vec![],
        trust_roots: Vec::new(),
        eab: None,
        staging_directory: None,
        max_concurrent_requests: None,
        orders_per_minute: None,
        certbot_account: None,
    };
    let state = Dir::new();
    let started = Instant::now();
    let err = Acme::open_with(
        "flaky",
        &issuer,
        &StateDir::open(state.path()).unwrap(),
        quick(3),
    )
    .await
    .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    // Two waits of at least the second the server asked for, not the 100 ms backoff.
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    let Error::Refused {
        status,
        detail,
        attempts,
        ..
    } = &err
    else {
        panic!("expected Refused, got {err:?}");
    };
    assert_eq!((*status, *attempts), (Some(503), 3));
    assert_eq!(
        detail,
        "HTTP 503 Service Unavailable: <html><body>upstream overloaded</body></html>"
    );
    assert_eq!(
        err.to_string(),
        "directory: the CA answered HTTP 503: HTTP 503 Service Unavailable: <html><body>upstream overloaded</body></html> (after 3 attempts)"
    );
}

#[tokio::test]
async fn without_ari_or_profiles_the_order_falls_back() {
    let pebble = Pebble::start().await;
    let state = Dir::new();
    let acme = open(&pebble, state.path()).await;
    // Pebble 2.4 offers neither.
    assert!(!acme.offers_renewal_info());
    assert!(acme.profiles().is_empty());
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let domain = unique("renewal");
    let (first, _) = issue(&acme, &pebble, &[&domain], KeyType::EcdsaP256, dns.clone()).await;
    let leaf = leaf_of(&first);
    assert_eq!(acme.renewal_window(&leaf.der).await.unwrap(), None);

    // A profile the directory does not offer (it offers none) is refused before ordering,
    // rather than giving another kind of certificate.
    let domains = vec![domain.clone()];
    let key = certkeeper::keys::generate(KeyType::EcdsaP256).unwrap();
    let err = acme
        .issue(&OrderRequest {
            domains: &domains,
            csr_der: certkeeper::keys::csr_der(&key, &domains).unwrap(),
            profile: Some("shortlived"),
            replaces: Some(&leaf.der),
            proof: Proof::Dns01 {
                dns: dns.clone(),
                dns_name: "challtestsrv",
            },
            settings: &pebble.settings(),
            track: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "profile \"shortlived\" is not offered by the CA (it offers no profiles)"
    );
    // A renewal with `replaces`: left out, since the directory offers no ARI (sending
    // `replaces` to a CA without ARI makes the order fail).
    let second = acme
        .issue(&OrderRequest {
            domains: &domains,
            csr_der: certkeeper::keys::csr_der(&key, &domains).unwrap(),
            profile: None,
            replaces: Some(&leaf.der),
            proof: Proof::Dns01 {
                dns,
                dns_name: "challtestsrv",
            },
            settings: &pebble.settings(),
            track: None,
        })
        .await
        .unwrap();
    check_chain(&pebble, &second, &key, &[&domain]);
    assert_ne!(leaf_of(&second).fingerprint, leaf.fingerprint);
    // And the fallback decision uses before_expiry: a fresh 5-year leaf is not due.
    let due = certkeeper::schedule::due(
        &leaf,
        None,
        certkeeper::config::BeforeExpiry::Duration(Duration::from_secs(30 * 86_400)),
        OffsetDateTime::now_utc(),
    );
    assert_eq!(due.source, certkeeper::schedule::DueSource::BeforeExpiry);
    assert!(!due.now);
}

/// Not a test: the wall time of issuing 1 and then 10 certificates (bench/issue.sh).
#[tokio::test]
#[ignore = "benchmark; run by bench/issue.sh"]
async fn bench_issue() {
    let pebble = Arc::new(Pebble::start().await);
    let state = Dir::new();
    let started = Instant::now();
    let acme = Arc::new(open(&pebble, state.path()).await);
    println!("bench account: {:.3} s", started.elapsed().as_secs_f64());
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    for n in [1usize, 10] {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let (acme, dns, pebble) = (acme.clone(), dns.clone(), pebble.clone());
            tasks.spawn(async move {
                let domain = unique(&format!("bench{n}-{i}"));
                issue(&acme, &pebble, &[&domain], KeyType::EcdsaP256, dns).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        println!(
            "bench {n} certificate(s): {:.3} s",
            started.elapsed().as_secs_f64()
        );
    }
}

// --- helpers

async fn open(pebble: &Pebble, state: &Path) -> Acme {
    Acme::open("pebble", &pebble.issuer(), &StateDir::open(state).unwrap())
        .await
        .unwrap_or_else(|e| panic!("open: {e}\n{}", pebble.logs()))
}

/// Issues for `domains` with a new key of `kind`; panics with Pebble's logs on failure.
async fn issue(
    acme: &Acme,
    pebble: &Pebble,
    domains: &[&str],
    kind: KeyType,
    dns: Arc<dyn DnsProvider>,
) -> (Issued, rcgen::KeyPair) {
    let (issued, key) = order(acme, domains, kind, dns, &pebble.settings(), None).await;
    let issued = issued.unwrap_or_else(|e| panic!("issue {domains:?}: {e}\n{}", pebble.logs()));
    (issued, key)
}

/// One order for `domains` with a new key of `kind`, DNS from `dns` and `settings`, and the
/// order recorded with `track` when given.
async fn order(
    acme: &Acme,
    domains: &[&str],
    kind: KeyType,
    dns: Arc<dyn DnsProvider>,
    settings: &DnsSettings,
    track: Option<&dyn acme::Track>,
) -> (Result<Issued, Error>, rcgen::KeyPair) {
    let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
    let key = certkeeper::keys::generate(kind).unwrap();
    let result = acme
        .issue(&OrderRequest {
            domains: &domains,
            csr_der: certkeeper::keys::csr_der(&key, &domains).unwrap(),
            profile: None,
            replaces: None,
            proof: Proof::Dns01 {
                dns,
                dns_name: "challtestsrv",
            },
            settings,
            track,
        })
        .await;
    (result, key)
}

/// The chain is leaf + intermediate, anchored in Pebble's root alone; the leaf is for the
/// key and covers the names.
fn check_chain(pebble: &Pebble, issued: &Issued, key: &rcgen::KeyPair, domains: &[&str]) {
    let (certs, _) = x509::read_certificates(issued.fullchain_pem.as_bytes()).unwrap();
    assert_eq!(certs.len(), 2, "leaf and intermediate");
    let mut trust = TrustStore::new();
    for root in x509::read_certificates(pebble.root_pem.as_bytes())
        .unwrap()
        .0
    {
        trust.add(root);
    }
    let (leaf, problems) = x509::examine_chain(&certs, &trust, OffsetDateTime::now_utc());
    assert_eq!(leaf, 0);
    assert!(problems.is_empty(), "{problems:?}");
    // The same chain against an empty store is untrusted: the check above is not vacuous.
    let (_, untrusted) = x509::examine_chain(&certs, &TrustStore::new(), OffsetDateTime::now_utc());
    assert!(!untrusted.is_empty());
    let key = PrivateKey::from_bytes(key.serialize_pem().as_bytes()).unwrap();
    assert!(x509::key_matches(&certs[0], &key));
    let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
    assert!(
        x509::uncovered(&certs[0].sans, &domains).is_empty(),
        "{:?}",
        certs[0].sans
    );
}

fn leaf_of(issued: &Issued) -> x509::Cert {
    x509::read_certificates(issued.fullchain_pem.as_bytes())
        .unwrap()
        .0
        .remove(0)
}

/// TXT values challtestsrv serves at `name` now.
pub(crate) async fn txt_at(pebble: &Pebble, name: &str) -> Vec<String> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let mut ns = NameServerConfig::udp(pebble.dns.ip());
    ns.connections[0].port = pebble.dns.port();
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    let resolver = hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .unwrap();
    match resolver.txt_lookup(name).await {
        Ok(answer) => answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A name no other test (nor an earlier run against the same Pebble) uses.
fn unique(tag: &str) -> String {
    format!("{}.certkeeper-test.example.com", unique_label(tag))
}

pub(crate) fn unique_label(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Short retries for failure tests.
fn quick(attempts: u32) -> Tuning {
    Tuning {
        // Without jitter: the tests time the waits.
        backoff: Backoff::new(attempts, Duration::from_millis(100))
            .max_backoff(Duration::from_secs(5))
            .retry_after(RetryAfter::AtLeast {
                limit: Duration::from_secs(5),
            })
            .jitter(Jitter::None),
        ..Tuning::default()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An order recorded as placed: issuer, order URL, account credentials.
type Placed = (String, String, Option<Vec<u8>>);

/// A record of orders in flight, as a fleet keeps it in etcd: what was placed, and what to
/// resume.
#[derive(Default)]
struct Recorder {
    placed: std::sync::Mutex<Vec<Placed>>,
    resume: Option<acme::Resume>,
}

impl acme::Track for Recorder {
    fn resume(&self, issuer: &str) -> Option<&acme::Resume> {
        self.resume.as_ref().filter(|_| issuer == "pebble")
    }

    fn placed<'a>(
        &'a self,
        issuer: &'a str,
        order_url: &'a str,
        account: Option<&'a [u8]>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        let entry = (issuer.into(), order_url.into(), account.map(<[u8]>::to_vec));
        self.placed.lock().unwrap().push(entry);
        Box::pin(async {})
    }
}

impl Recorder {
    /// A recorder that resumes what `other` recorded last.
    fn resuming(other: &Recorder) -> Recorder {
        let (_, order_url, account) = other.placed.lock().unwrap().last().cloned().unwrap();
        Recorder {
            placed: Default::default(),
            resume: Some(acme::Resume {
                order_url,
                account: zeroize::Zeroizing::new(account.expect("the account is recorded")),
            }),
        }
    }
}

/// One order with `track`, for `domain`, with DNS from `dns` and `settings`.
async fn order_tracked(
    acme: &Acme,
    domain: &str,
    dns: Arc<dyn DnsProvider>,
    settings: &DnsSettings,
    track: &Recorder,
) -> (Result<Issued, Error>, rcgen::KeyPair) {
    order(
        acme,
        &[domain],
        KeyType::EcdsaP256,
        dns,
        settings,
        Some(track),
    )
    .await
}

#[tokio::test]
async fn an_order_left_pending_is_resumed_with_the_account_that_placed_it() {
    let pebble = Pebble::start().await;
    let (state1, state2) = (Dir::new(), Dir::new());
    let first = open(&pebble, state1.path()).await;
    let second = open(&pebble, state2.path()).await;
    assert_ne!(first.account_id(), second.account_id());
    let domain = unique("resume");
    // The first host's records never become visible: its order stays pending.
    let silent = Arc::new(ChallTestSrv::not_publishing(&pebble.challtestsrv));
    let short = DnsSettings {
        propagation_timeout: Duration::from_millis(1500),
        poll_interval: Duration::from_millis(200),
        ..pebble.settings()
    };
    let placed = Recorder::default();
    let (result, _) = order_tracked(&first, &domain, silent, &short, &placed).await;
    assert!(matches!(result, Err(Error::Dns(_))), "{result:?}");
    {
        let placed = placed.placed.lock().unwrap();
        assert_eq!(placed.len(), 1, "the order is recorded once");
        let (issuer, url, account) = &placed[0];
        assert_eq!(issuer, "pebble");
        assert!(url.starts_with("https://"), "{url}");
        let account: serde_json::Value = serde_json::from_slice(account.as_ref().unwrap()).unwrap();
        assert_eq!(account["id"].as_str(), Some(first.account_id()));
    }
    assert_eq!(crate::fleet_pass::orders(&pebble), 1);

    // Another host, with an account of its own, resumes it: no new order, its own key.
    let dns = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let resuming = Recorder::resuming(&placed);
    let (issued, key) = order_tracked(&second, &domain, dns, &pebble.settings(), &resuming).await;
    let issued = issued.unwrap_or_else(|e| panic!("resume: {e}\n{}", pebble.logs()));
    check_chain(&pebble, &issued, &key, &[&domain]);
    assert_eq!(issued.order_url, placed.placed.lock().unwrap()[0].1);
    assert!(
        resuming.placed.lock().unwrap().is_empty(),
        "nothing new placed"
    );
    assert_eq!(crate::fleet_pass::orders(&pebble), 1, "{}", pebble.logs());
}

#[tokio::test]
async fn an_order_that_cannot_be_finished_here_is_placed_again() {
    let pebble = Pebble::start().await;
    let (state1, state2) = (Dir::new(), Dir::new());
    let first = open(&pebble, state1.path()).await;
    let second = open(&pebble, state2.path()).await;
    let dns: Arc<dyn DnsProvider> = Arc::new(ChallTestSrv::new(&pebble.challtestsrv));
    let settings = pebble.settings();

    // Finalized already, with the first host's key (lost with it): a new order.
    let domain = unique("finalized");
    let placed = Recorder::default();
    let (done, _) = order_tracked(&first, &domain, dns.clone(), &settings, &placed).await;
    let done = done.unwrap();
    let resuming = Recorder::resuming(&placed);
    let (issued, key) = order_tracked(&second, &domain, dns.clone(), &settings, &resuming).await;
    let issued = issued.unwrap();
    check_chain(&pebble, &issued, &key, &[&domain]);
    assert_ne!(issued.order_url, done.order_url);
    assert_eq!(resuming.placed.lock().unwrap().len(), 1);
    assert_eq!(crate::fleet_pass::orders(&pebble), 2);

    // An account of another CA directory, or credentials that do not read: a new order.
    let mut other_ca = Recorder::resuming(&placed);
    let mut json: serde_json::Value =
        serde_json::from_slice(&other_ca.resume.as_ref().unwrap().account).unwrap();
    json["directory"] = "https://ca.invalid/directory".into();
    other_ca.resume.as_mut().unwrap().account =
        zeroize::Zeroizing::new(serde_json::to_vec(&json).unwrap());
    let garbled = Recorder {
        placed: Default::default(),
        resume: Some(acme::Resume {
            order_url: done.order_url.clone(),
            account: zeroize::Zeroizing::new(b"{not json".to_vec()),
        }),
    };
    for (n, track) in [other_ca, garbled].iter().enumerate() {
        let domain = unique("elsewhere");
        let (issued, _) = order_tracked(&second, &domain, dns.clone(), &settings, track).await;
        issued.unwrap();
        assert_eq!(track.placed.lock().unwrap().len(), 1);
        assert_eq!(crate::fleet_pass::orders(&pebble), 3 + n);
    }
}
