//! dns-persist-01 through the real binary against Pebble 2.10.1 and its challtestsrv: the
//! record `persist show` prints is the one Pebble accepts, an apex and its wildcard are
//! issued with only that standing record (no DNS provider configured, no `_acme-challenge`
//! record ever written), removing it makes the next renewal fail with its cause, `persist
//! publish` creates it once through a provider, and a CA without the challenge (Debian's
//! Pebble 2.4) fails with that sentence.

use crate::acme::{txt_at, unique_label};
use crate::renew_acme::write_hook;
use crate::util::pebble::{Options, Pebble};
use crate::util::{Dir, Run};

/// Pebble 2.10.1, validating every order afresh.
async fn current_pebble() -> Pebble {
    Pebble::start_with(Options {
        current: true,
        no_authz_reuse: true,
        ..Options::default()
    })
    .await
}

/// A host with one certificate `www` for an apex and its wildcard, `challenge:
/// dns-persist-01`, and `extra` (YAML) at the top level.
struct Host {
    dir: Dir,
    apex: String,
}

impl Host {
    fn new(pebble: &Pebble, cert_extra: &str, extra: &str) -> Host {
        let dir = Dir::new();
        let apex = format!("{}.certkeeper-test.example.com", unique_label("persist"));
        dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  pebble:\n    type: acme\n    directory: {dir}\n    contact: [\"mailto:ops@example.com\"]\n    trust_roots: {roots}\n    max_concurrent_requests: 1\n\
             dns:\n  resolvers: [\"{dns}\"]\n  propagation_timeout: 10s\n  poll_interval: 1s\n\
             {extra}\
             certificates:\n  - name: www\n    domains: [\"{apex}\", \"*.{apex}\"]\n    issuer: pebble\n    challenge: dns-persist-01\n{cert_extra}    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
            dir = pebble.directory,
            roots = pebble.trust_roots.display(),
            dns = pebble.dns,
        ));
        Host { dir, apex }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.dir.run(args)
    }

    /// The record name for the apex (and its wildcard).
    fn record(&self) -> String {
        format!("_validation-persist.{}.", self.apex)
    }

    /// The account URL stored for the issuer.
    fn account(&self) -> String {
        let file = std::fs::read_dir(self.dir.join("state/accounts/pebble"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let creds: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        creds["id"].as_str().expect("account id").to_owned()
    }
}

/// The records of `persist show` output: (name, value) of each zone-file line.
fn shown_records(run: &Run) -> Vec<(String, String)> {
    run.stdout
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(|l| {
            let (name, value) = l
                .split_once(" IN TXT ")
                .unwrap_or_else(|| panic!("not a zone-file TXT line: {l}"));
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("value not quoted: {l}"));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// Sets (or clears, with `None`) the TXT values at `name` in challtestsrv.
async fn set_txt(pebble: &Pebble, name: &str, value: Option<&str>) {
    let client = reqwest::Client::new();
    let (path, body) = match value {
        Some(v) => ("set-txt", serde_json::json!({ "host": name, "value": v })),
        None => ("clear-txt", serde_json::json!({ "host": name })),
    };
    client
        .post(format!("{}/{path}", pebble.challtestsrv))
        .json(&body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("challtestsrv {path}: {e}"));
}

/// `persist show`'s record, published by hand, is what Pebble accepts: the apex and the
/// wildcard are issued with no DNS provider configured and no `_acme-challenge` record ever
/// written; `config check --online` sees the record and names its account.
#[tokio::test(flavor = "multi_thread")]
async fn the_record_persist_show_prints_issues_an_apex_and_wildcard_without_dns_credentials() {
    let pebble = current_pebble().await;
    let host = Host::new(&pebble, "", "");
    let check = host.run(&["config", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains(&format!(
            "certificate www: {apex}, *.{apex} via pebble (dns-persist-01)",
            apex = host.apex
        )),
        "{check:?}"
    );

    let show = host.run(&["persist", "show", "www"]);
    assert_eq!(show.code, 0, "{show:?}");
    let account = host.account();
    assert!(account.starts_with("https://127.0.0.1:"), "{account}");
    let records = shown_records(&show);
    assert_eq!(
        records,
        [(
            host.record(),
            format!("pebble.letsencrypt.org; accounturi={account}; policy=wildcard")
        )],
        "{show:?}"
    );
    assert!(
        show.stdout.starts_with(&format!(
            "; certificate www, issuer pebble, account {account}\n"
        )),
        "{show:?}"
    );
    // The account is kept: a second show prints the same record.
    assert_eq!(host.run(&["persist", "show", "www"]).stdout, show.stdout);

    // Before the record exists, the online check says so.
    let online = host.run(&["config", "check", "--online"]);
    assert_eq!(online.code, 2, "{online:?}");
    assert!(
        online.stdout.contains(&format!(
            "online certificates.www (issuer pebble): FAILED: no TXT record at {} authorizes account {account} for issuer pebble.letsencrypt.org ({}: no TXT record); create it (certkeeper persist show www prints it)",
            host.record(),
            pebble.dns
        )),
        "{online:?}"
    );

    set_txt(&pebble, &records[0].0, Some(&records[0].1)).await;
    let online = host.run(&["config", "check", "--online"]);
    assert_eq!(online.code, 0, "{online:?}");
    assert!(
        online.stdout.contains(&format!(
            "online certificates.www (issuer pebble): ok: dns-persist-01 record(s) visible ({} at {}), authorizing account {account} for pebble.letsencrypt.org",
            host.record(),
            pebble.dns
        )),
        "{online:?}"
    );

    let renew = host.run(&["renew"]);
    assert_eq!(renew.code, 0, "{renew:?}\n{}", pebble.logs());
    assert!(
        renew.stdout.starts_with("www: renewed from pebble"),
        "{renew:?}"
    );
    let (code, entries) = host.dir.check_json();
    assert_eq!(code, 0, "{entries:#?}");
    assert_eq!(entries[0]["integrity"], true, "{entries:#?}");
    let mut sans: Vec<&str> = entries[0]["sans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    sans.sort();
    let wildcard = format!("*.{}", host.apex);
    assert_eq!(sans, [wildcard.as_str(), host.apex.as_str()]);
    // Pebble validated both names through dns-persist-01, and nothing else was published.
    let logs = pebble.logs();
    assert!(!logs.contains("_acme-challenge"), "{logs}");
    let acme_challenge = format!("_acme-challenge.{}.", host.apex);
    assert!(txt_at(&pebble, &acme_challenge).await.is_empty());
    assert_eq!(
        txt_at(&pebble, &host.record()).await,
        [records[0].1.clone()],
        "the standing record stays"
    );
}

/// A record that does not cover the wildcard, then the standing record removed after an
/// issuance: each renewal fails before the CA is told, naming the record, the account and
/// what the resolver answered; the live pair stays.
#[tokio::test(flavor = "multi_thread")]
async fn removing_the_record_fails_the_next_renewal_with_its_cause() {
    let pebble = current_pebble().await;
    let host = Host::new(&pebble, "", "");
    let show = host.run(&["persist", "show", "www"]);
    assert_eq!(show.code, 0, "{show:?}");
    let records = shown_records(&show);
    let (name, value) = &records[0];
    let account = host.account();

    // Before any issuance (so no valid authorization exists that Pebble could reuse): a
    // record without policy=wildcard does not cover the wildcard, and nothing is sent.
    let apex_only = value.replace("; policy=wildcard", "");
    set_txt(&pebble, name, Some(&apex_only)).await;
    let renew = host.run(&["renew"]);
    assert_eq!(renew.code, 1, "{renew:?}");
    assert!(
        renew.stdout.contains(&format!(
            "www: FAILED: issuer pebble: no TXT record at {name} authorizes account {account} for issuer pebble.letsencrypt.org ({}: \"{apex_only}\": without policy=wildcard, which a wildcard name needs); create it (certkeeper persist show www prints it)",
            pebble.dns
        )),
        "{renew:?}"
    );
    assert!(!host.dir.join("live/www/fullchain.pem").exists());

    set_txt(&pebble, name, None).await;
    set_txt(&pebble, name, Some(value)).await;
    let renew = host.run(&["renew", "--force"]);
    assert_eq!(renew.code, 0, "{renew:?}\n{}", pebble.logs());
    let live = std::fs::read(host.dir.join("live/www/fullchain.pem")).unwrap();

    // Record removed. Pebble 2.10.1 reuses a valid authorization one time in a hundred even
    // with PEBBLE_AUTHZREUSE=0 (it makes a new one when rand.Intn(100) > 0), so one of the
    // two may be reused; the renewal fails on the other (unless both are: 1 in 10,000).
    set_txt(&pebble, name, None).await;
    let renew = host.run(&["renew", "--force"]);
    assert_eq!(renew.code, 1, "{renew:?}");
    assert!(
        renew.stdout.contains(&format!(
            "www: FAILED: issuer pebble: no TXT record at {name} authorizes account {account} for issuer pebble.letsencrypt.org ({}: no TXT record); create it (certkeeper persist show www prints it)",
            pebble.dns
        )),
        "{renew:?}"
    );
    assert_eq!(
        std::fs::read(host.dir.join("live/www/fullchain.pem")).unwrap(),
        live
    );
    let metrics = host.run(&["metrics"]);
    assert!(metrics.stdout.contains("cause=\"dns\""), "{metrics:?}");
}

/// `persist publish` creates the record through the certificate's provider once (a second
/// run finds it), and the renewal then publishes nothing through that provider.
#[tokio::test(flavor = "multi_thread")]
async fn persist_publish_creates_the_record_once_and_renewals_publish_nothing() {
    let pebble = current_pebble().await;
    let host = Host::new(
        &pebble,
        "    dns_provider: hook\n",
        "dns_providers:\n  hook:\n    type: exec\n    command: [hooks/publish]\n    timeout: 20s\n",
    );
    let hook_log = host.dir.join("hook.log");
    write_hook(
        &host.dir.join("hooks/publish"),
        &hook_log,
        Some(&pebble.challtestsrv),
    );
    let publish = host.run(&["persist", "publish", "www"]);
    assert_eq!(publish.code, 0, "{publish:?}");
    let account = host.account();
    let line = format!(
        "{} IN TXT \"pebble.letsencrypt.org; accounturi={account}; policy=wildcard\"",
        host.record()
    );
    assert_eq!(
        publish.stdout,
        format!("created through dns provider hook: {line}\n"),
        "{publish:?}"
    );
    let again = host.run(&["persist", "publish", "www"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.stdout, format!("already visible: {line}\n"));

    let renew = host.run(&["renew"]);
    assert_eq!(renew.code, 0, "{renew:?}\n{}", pebble.logs());
    let calls: Vec<String> = std::fs::read_to_string(&hook_log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].ends_with(&format!(" present {}", host.record())),
        "{calls:?}"
    );
}

/// A CA that does not offer dns-persist-01 (Debian's Pebble 2.4, like Let's Encrypt
/// production in 2026) fails the pass with that sentence, as a config problem; its directory
/// names no issuer domain, so `persist show` says it cannot write the record.
#[tokio::test(flavor = "multi_thread")]
async fn a_ca_without_dns_persist_01_fails_with_that_sentence() {
    let pebble = Pebble::start().await;
    let host = Host::new(&pebble, "", "");
    let renew = host.run(&["renew"]);
    assert_eq!(renew.code, 1, "{renew:?}");
    assert!(
        renew.stdout.contains(&format!(
            "www: FAILED: issuer pebble: the CA does not offer dns-persist-01 for {}; use challenge: dns-01 with a dns_provider for this certificate, or an issuer that offers it",
            host.apex
        )),
        "{renew:?}\n{}",
        pebble.logs()
    );
    let metrics = host.run(&["metrics"]);
    assert!(metrics.stdout.contains("cause=\"config\""), "{metrics:?}");

    let show = host.run(&["persist", "show", "www"]);
    assert_eq!(show.code, 1, "{show:?}");
    assert_eq!(
        show.stderr.trim_end(),
        format!(
            "certkeeper: persist show www: issuer pebble: the CA's directory {} names no issuer domain (meta.caaIdentities), so the dns-persist-01 record cannot be written; use challenge: dns-01 for its certificates",
            pebble.directory
        ),
        "{show:?}"
    );
}
