//! The loopback ACME fake (`util::fake_acme`) driven by certkeeper's real client: `certkeeper
//! renew` issues from it a certificate that `certkeeper check` calls OK, asks its renewal
//! information, sends `replaces` with the live certificate's certID, orders the configured
//! profile, and lives with what current CAs do (rate limits, `alreadyReplaced`, `replaces`
//! echoed only on creation or not at all, no ARI). One test speaks raw HTTP to show the fake
//! enforces what RFC 8555 asks of a server.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use crate::util::fake_acme::{
    Echo, FakeAcme, NewOrderRecord, Window, cert_id, lets_encrypt_profiles, path,
};
use crate::util::{Dir, Run};

/// Like current CAs, the fake refuses requests without a User-Agent (RFC 8555 §6.1), so every
/// test here fails if one request lacks it; this one also says which.
#[test]
fn renew_issues_checks_asks_ari_and_replaces() {
    let fake = FakeAcme::start();
    issue_check_and_replace(&fake);
    let bare: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.user_agent.is_none())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(bare.is_empty(), "requests without a User-Agent: {bare:?}");
}

#[test]
fn the_configured_profile_is_ordered_and_sets_the_lifetime() {
    let fake = FakeAcme::start();
    fake.configure(|b| {
        b.profiles = lets_encrypt_profiles();
        // certkeeper must never reuse a nonce nor send one of its own.
        b.check_nonces = true;
    });
    let host = Host::new();
    host.config(&fake, "2d", "    profile: shortlived\n");
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{:#?}", fake.requests());
    let orders = fake.new_orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].profile.as_deref(), Some("shortlived"));
    let issued = &fake.issued()[0];
    assert_eq!(issued.profile.as_deref(), Some("shortlived"));
    assert_eq!(
        issued.not_after - issued.not_before,
        time::Duration::hours(160)
    );
    let (code, entries) = host.check();
    assert_eq!(code, 0, "{entries:#?}");
    let refused: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.status >= 400)
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");

    // A profile the CA does not offer is refused before ordering, naming the offered ones.
    host.config(&fake, "2d", "    profile: shortlive\n");
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("www: FAILED"), "{run:?}");
    assert!(
        run.stdout.contains(
            "\"shortlive\" is not offered by the CA (offered: classic, shortlived, tlsserver)"
        ),
        "{run:?}"
    );
    assert_eq!(fake.new_orders().len(), 1);
}

#[test]
fn a_rate_limited_new_order_is_retried_after_retry_after() {
    let fake = FakeAcme::start();
    fake.rate_limit_new_orders(1, Duration::from_secs(2));
    let host = Host::new();
    host.config(&fake, "30d", "");
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{:#?}", fake.requests());
    let statuses: Vec<u16> = fake.new_orders().iter().map(|o| o.status).collect();
    assert_eq!(statuses, [429, 201]);
    let posts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == path::NEW_ORDER)
        .collect();
    let waited = posts[1].at.duration_since(posts[0].at).unwrap();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
}

/// RFC 9773 §5 leaves the client's answer open; lego (go-acme/lego#2475) orders again without
/// `replaces`, which gets the certificate (only the CA's bookkeeping of the replacement is
/// lost).
#[test]
fn already_replaced_is_answered_by_ordering_without_replaces() {
    let fake = FakeAcme::start();
    let host = Host::new();
    host.config(&fake, "30d", "");
    assert_eq!(host.run(&["renew"]).code, 0);
    let first = cert_id(&host.live_leaf_der()).unwrap();
    fake.reject_next_replaces(1);
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let orders = fake.new_orders();
    assert_eq!(orders.len(), 3, "{orders:#?}");
    assert_eq!(
        (orders[1].replaces.as_deref(), orders[1].status),
        (Some(first.as_str()), 409)
    );
    assert_eq!(
        (orders[2].replaces.as_deref(), orders[2].status),
        (None, 201)
    );
}

/// Let's Encrypt reflects `replaces` in the newOrder answer but not on later reads of the
/// order (letsencrypt/boulder#8272).
#[test]
fn replaces_echoed_only_on_creation_is_fine() {
    let fake = FakeAcme::start();
    fake.configure(|b| b.echo_replaces = Echo::NewOrderOnly);
    renew_twice_replacing(&fake);
}

/// RFC 9773 §5 says the CA MUST reflect `replaces`; one that does not (Let's Encrypt before
/// letsencrypt/boulder#8056) still issued the certificate.
#[test]
fn replaces_never_echoed_still_renews() {
    let fake = FakeAcme::start();
    fake.configure(|b| b.echo_replaces = Echo::Never);
    renew_twice_replacing(&fake);
}

#[test]
fn without_ari_nothing_is_asked_and_replaces_is_left_out() {
    let fake = FakeAcme::start();
    fake.configure(|b| b.renewal_info = false);
    let host = Host::new();
    host.config(&fake, "30d", "");
    assert_eq!(host.run(&["renew"]).code, 0);
    let run = host.run(&["renew"]);
    assert!(run.stdout.contains("www: not due"), "{run:?}");
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(fake.renewal_info_gets(), 0);
    let orders = fake.new_orders();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[1].replaces, None);
}

#[tokio::test]
async fn the_fake_answers_as_rfc_8555_asks() {
    certkeeper::acme::install_crypto_provider();
    let fake = FakeAcme::start();
    fake.configure(|b| b.check_nonces = true);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", fake.url());
    let ua = ("User-Agent", "certkeeper-tests");

    // No User-Agent: refused, with a problem document and a nonce like every answer.
    let rsp = http.get(url(path::DIRECTORY)).send().await.unwrap();
    assert_eq!(rsp.status(), 400);
    assert_eq!(rsp.headers()["content-type"], "application/problem+json");
    assert!(rsp.headers().contains_key("replay-nonce"));
    let doc: Value = rsp.json().await.unwrap();
    assert_eq!(doc["type"], "urn:ietf:params:acme:error:malformed");
    assert_eq!(
        doc["detail"],
        "All requests MUST include a User-Agent header"
    );

    // The directory: ARI by default, no profiles, one random key besides the RFC's.
    let dir: Value = http
        .get(url(path::DIRECTORY))
        .header(ua.0, ua.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dir["renewalInfo"], url(path::RENEWAL_INFO));
    assert_eq!(dir["newOrder"], url(path::NEW_ORDER));
    assert!(dir["meta"].get("profiles").is_none());
    assert_eq!(dir.as_object().unwrap().len(), 8, "{dir:#}");

    // newNonce: HEAD 200, GET 204, a fresh nonce each time.
    let nonce = async || {
        let rsp = http
            .head(url(path::NEW_NONCE))
            .header(ua.0, ua.1)
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        rsp.headers()["replay-nonce"].to_str().unwrap().to_owned()
    };
    let first = nonce().await;
    assert_ne!(first, nonce().await);
    let rsp = http
        .get(url(path::NEW_NONCE))
        .header(ua.0, ua.1)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 204);

    let post = async |target: &str, header: Value, payload: Option<Value>| {
        let body = json!({
            "protected": B64.encode(header.to_string()),
            "payload": payload.map(|p| B64.encode(p.to_string())).unwrap_or_default(),
            "signature": B64.encode("not checked"),
        });
        let rsp = http
            .post(url(target))
            .header(ua.0, ua.1)
            .header("Content-Type", "application/jose+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = rsp.status().as_u16();
        let location = rsp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let doc: Value = rsp.json().await.unwrap_or(Value::Null);
        (status, location, doc)
    };
    let jwk = json!({ "kty": "EC", "crv": "P-256", "x": "AAAA", "y": "BBBB" });
    let terms = json!({ "termsOfServiceAgreed": true });

    // An account, then the same nonce again: badNonce.
    let header =
        json!({ "alg": "ES256", "jwk": jwk, "nonce": first, "url": url(path::NEW_ACCOUNT) });
    let (status, account, _) = post(path::NEW_ACCOUNT, header.clone(), Some(terms.clone())).await;
    assert_eq!(status, 201);
    let account = account.unwrap();
    let (status, _, doc) = post(path::NEW_ACCOUNT, header, Some(terms)).await;
    assert_eq!(
        (status, &doc["type"]),
        (400, &json!("urn:ietf:params:acme:error:badNonce"))
    );

    // A protected url that is not the request's: malformed.
    let kid = |nonce: String, target: &str| json!({ "alg": "ES256", "kid": account, "nonce": nonce, "url": url(target) });
    let order = json!({ "identifiers": [{ "type": "dns", "value": "a.example.com" }] });
    let (status, _, doc) = post(
        path::NEW_ORDER,
        kid(nonce().await, path::NEW_ACCOUNT),
        Some(order.clone()),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        doc["detail"].as_str().unwrap().contains("'url' incorrect"),
        "{doc}"
    );

    // A good order is ready at once: its authorization is valid.
    let (status, order_url, doc) = post(
        path::NEW_ORDER,
        kid(nonce().await, path::NEW_ORDER),
        Some(order),
    )
    .await;
    assert_eq!(status, 201, "{doc}");
    assert_eq!(doc["status"], "ready");
    let authz = doc["authorizations"][0].as_str().unwrap().to_owned();
    let authz_path = authz.strip_prefix(&fake.url()).unwrap().to_owned();
    let (status, _, doc) = post(&authz_path, kid(nonce().await, &authz_path), None).await;
    assert_eq!((status, &doc["status"]), (200, &json!("valid")));
    // Resources other than the directory and newNonce are POST only.
    let order_path = order_url
        .unwrap()
        .strip_prefix(&fake.url())
        .unwrap()
        .to_owned();
    let rsp = http
        .get(url(&order_path))
        .header(ua.0, ua.1)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 405);

    // renewalInfo: a certID of no certificate here is 404, something else 400.
    let get = async |p: String| {
        http.get(url(&p))
            .header(ua.0, ua.1)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(get(format!("{}/AAAA.AAAA", path::RENEWAL_INFO)).await, 404);
    assert_eq!(get(format!("{}/nope", path::RENEWAL_INFO)).await, 400);
    assert_eq!(fake.renewal_info_gets(), 2);
}

// --- helpers

/// Issue; check; not due yet, after asking ARI; forced renewal sending `replaces` with the
/// live certificate's certID; renewal because the CA's window has passed although
/// `before_expiry` is far.
fn issue_check_and_replace(fake: &FakeAcme) {
    let host = Host::new();
    host.config(fake, "30d", "");
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{:#?}", fake.requests());
    assert!(run.stdout.starts_with("www: renewed from fake"), "{run:?}");
    host.assert_ok();
    let first = host.live_leaf_der();
    let issued = fake.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].der, first);
    assert_eq!(
        fake.new_orders(),
        [NewOrderRecord {
            identifiers: DOMAINS.map(String::from).to_vec(),
            profile: None,
            replaces: None,
            status: 201,
        }]
    );
    // The authorizations were valid already: nothing was published.
    assert!(host.hook_calls().is_empty(), "{:?}", host.hook_calls());

    // Not due: the window of the live certificate (its last third) is far; ARI was asked.
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: not due"), "{run:?}");
    let ari = format!("{}/{}", path::RENEWAL_INFO, issued[0].cert_id);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == ari && r.status == 200),
        "{:#?}",
        fake.requests()
    );

    // Forced: the order replaces the live certificate.
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: renewed from fake"), "{run:?}");
    let orders = fake.new_orders();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[1].replaces, cert_id(&first));
    assert_eq!(orders[1].status, 201);
    let second = host.live_leaf_der();
    assert_ne!(second, first);
    assert_eq!(fake.issued()[1].replaces, Some(issued[0].cert_id.clone()));
    host.assert_ok();

    // The CA's window for the live certificate has passed: due, though 30d before expiry is
    // two months away.
    fake.set_window(&cert_id(&second).unwrap(), Window::passed());
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: renewed from fake"), "{run:?}");
    let orders = fake.new_orders();
    assert_eq!(orders.len(), 3);
    assert_eq!(orders[2].replaces, cert_id(&second));
    host.assert_ok();
}

/// Issue, then a forced renewal that must succeed and say what it replaces.
fn renew_twice_replacing(fake: &FakeAcme) {
    let host = Host::new();
    host.config(fake, "30d", "");
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let first = host.live_leaf_der();
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}\n{:#?}", fake.new_orders());
    assert!(run.stdout.starts_with("www: renewed from fake"), "{run:?}");
    assert_eq!(fake.new_orders()[1].replaces, cert_id(&first));
    host.assert_ok();
}

/// A host whose certkeeper orders `www` ([`DOMAINS`]) from the fake, with a DNS hook that
/// only logs (authorizations at the fake are valid at once).
struct Host {
    dir: Dir,
    hook_log: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = Dir::new();
        let hook_log = dir.join("hook.log");
        let hook = dir.write(
            "hooks/log",
            format!("#!/bin/sh\necho \"$@\" >> '{}'\n", hook_log.display()),
        );
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        Host { dir, hook_log }
    }

    /// Writes the config: `before_expiry`, and `extra` lines for the certificate.
    fn config(&self, fake: &FakeAcme, before_expiry: &str, extra: &str) {
        let roots = fake.write_root(self.dir.join("fake-root.pem"));
        let domains: Vec<String> = DOMAINS.iter().map(|d| format!("\"{d}\"")).collect();
        self.dir.config(&format!(
            "state_dir: state\n\
             issuers:\n  fake:\n    type: acme\n    directory: {directory}\n    contact: [\"mailto:ops@example.com\"]\n    trust_roots: {roots}\n\
             dns_providers:\n  hook:\n    type: exec\n    command: [hooks/log]\n\
             renewal:\n  before_expiry: {before_expiry}\n\
             certificates:\n  - name: www\n    domains: [{domains}]\n    issuer: fake\n    dns_provider: hook\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n{extra}",
            directory = fake.directory_url(),
            roots = roots.display(),
            domains = domains.join(", "),
        ));
    }

    fn run(&self, args: &[&str]) -> Run {
        self.dir.run(args)
    }

    fn check(&self) -> (i32, Vec<Value>) {
        self.dir.check_json()
    }

    /// `check` calls the live pair OK: chain to the fake's root, key, names, integrity.
    fn assert_ok(&self) {
        let (code, entries) = self.check();
        assert_eq!(code, 0, "{entries:#?}");
        assert_eq!(entries[0]["status"], "ok", "{entries:#?}");
        assert_eq!(entries[0]["integrity"], true, "{entries:#?}");
        assert_eq!(entries[0]["chain_length"], 2, "{entries:#?}");
    }

    /// The live leaf (DER).
    fn live_leaf_der(&self) -> Vec<u8> {
        let pem = std::fs::read(self.dir.join("live/www/fullchain.pem")).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        block.contents
    }

    fn hook_calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

const DOMAINS: [&str; 2] = ["shop.example.com", "*.shop.example.com"];

/// The state record of certificate `www`, as JSON.
fn state_of(host: &Host) -> Value {
    serde_json::from_slice(&std::fs::read(host.dir.join("state/state/www.json")).unwrap()).unwrap()
}

/// The kept renewal-information answers, by certificate, as JSON.
fn aris_of(host: &Host) -> Value {
    serde_json::from_slice(&std::fs::read(host.dir.join("state/ari.json")).unwrap()).unwrap()
}

/// Replaces the kept answers.
fn set_aris(host: &Host, aris: &Value) {
    std::fs::write(
        host.dir.join("state/ari.json"),
        serde_json::to_vec(aris).unwrap(),
    )
    .unwrap();
}

#[test]
fn the_renewal_information_is_kept_until_its_retry_after() {
    let fake = FakeAcme::start();
    let host = Host::new();
    host.config(&fake, "30d", "");
    assert_eq!(host.run(&["renew"]).code, 0);
    // Three passes over a certificate that is not due ask the CA once.
    for _ in 0..3 {
        let run = host.run(&["renew"]);
        assert!(run.stdout.starts_with("www: not due"), "{run:?}");
    }
    assert_eq!(fake.renewal_info_gets(), 1);
    let mut aris = aris_of(&host);
    let kept = &aris["www"];
    let fetched = kept["fetched"].as_i64().unwrap();
    // The fake's Retry-After is 6 hours.
    let kept_for = kept["retry_after"].as_i64().unwrap() - fetched;
    assert!((kept_for - 6 * 3600).abs() <= 5, "{kept_for}");
    // The certificate's own record is not where a mere question goes.
    let record = std::fs::read_to_string(host.dir.join("state/state/www.json")).unwrap();
    assert!(!record.contains("ari"), "{record}");
    // Once the Retry-After has passed, the next pass asks again.
    aris["www"]["retry_after"] = json!(fetched - 1);
    set_aris(&host, &aris);
    assert!(host.run(&["renew"]).stdout.starts_with("www: not due"));
    assert_eq!(fake.renewal_info_gets(), 2);
}

/// The case users met: `before_expiry` (30 days) says due for a 20-day certificate, the CA's
/// window says later. `check` and `renew` take the same decision, from the kept answer.
#[test]
fn check_and_renew_agree_on_due_with_the_cas_window() {
    let fake = FakeAcme::start();
    fake.configure(|b| b.validity = Duration::from_secs(20 * 86_400));
    let host = Host::new();
    host.config(&fake, "30d", "");
    assert_eq!(host.run(&["renew"]).code, 0);
    let run = host.run(&["renew"]);
    assert!(run.stdout.starts_with("www: not due"), "{run:?}");
    let (code, entries) = host.check();
    assert_eq!(code, 0, "{entries:#?}");
    assert_eq!(entries[0]["due"], false, "{entries:#?}");

    // The CA moves the window into the past (as before a mass revocation): renew now, and
    // check says due once the answer is kept.
    fake.set_window_fn(|_| Window::passed());
    let mut aris = aris_of(&host);
    aris["www"]["retry_after"] = json!(0);
    set_aris(&host, &aris);
    let run = host.run(&["renew", "--dry-run"]);
    assert!(run.stdout.starts_with("www: due; would order"), "{run:?}");
    // A real pass asks and keeps the answer; its order is refused (rate limited for an
    // hour), and check takes the same decision from what was kept: due.
    fake.rate_limit_new_orders(1, Duration::from_secs(3600));
    let gets = fake.renewal_info_gets();
    let run = host.run(&["renew"]);
    assert!(run.stdout.starts_with("www: FAILED"), "{run:?}");
    assert_eq!(fake.renewal_info_gets(), gets + 1);
    let (code, entries) = host.check();
    assert_eq!(
        (code, &entries[0]["due"]),
        (1, &Value::Bool(true)),
        "{entries:#?}"
    );
    assert_eq!(fake.renewal_info_gets(), gets + 1, "check asked the CA");
    let run = host.run(&["renew", "--force"]);
    assert!(run.stdout.starts_with("www: renewed from fake"), "{run:?}");
}

#[test]
fn a_rate_limited_certificate_waits_for_the_cas_retry_after_not_the_backoff_ladder() {
    let fake = FakeAcme::start();
    fake.rate_limit_new_orders(100, Duration::from_secs(3 * 3600));
    let host = Host::new();
    host.config(&fake, "30d", "");
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("new order: the CA answered HTTP 429 rateLimited:"),
        "{run:?}"
    );
    // One request, no retries against a 3-hour Retry-After.
    assert_eq!(fake.new_orders().len(), 1);
    let next = state_of(&host)["next_attempt"].as_i64().unwrap();
    assert!(
        (next - started - 3 * 3600).abs() < 60,
        "next attempt {next}, expected about {}",
        started + 3 * 3600
    );
    let run = host.run(&["renew"]);
    assert!(
        run.stdout.starts_with("www: last attempt failed"),
        "{run:?}"
    );
    assert_eq!(fake.new_orders().len(), 1);
}

#[test]
fn a_changed_profile_makes_the_certificate_due() {
    let fake = FakeAcme::start();
    fake.configure(|b| b.profiles = lets_encrypt_profiles());
    let host = Host::new();
    host.config(&fake, "30d", "    profile: classic\n");
    assert_eq!(host.run(&["renew"]).code, 0);
    assert!(host.run(&["renew"]).stdout.starts_with("www: not due"));
    host.config(&fake, "30d", "    profile: shortlived\n");
    let (_, entries) = host.check();
    assert_eq!(entries[0]["due"], true, "{entries:#?}");
    let run = host.run(&["renew"]);
    assert!(run.stdout.starts_with("www: renewed from fake"), "{run:?}");
    let orders = fake.new_orders();
    assert_eq!(
        orders.last().unwrap().profile.as_deref(),
        Some("shortlived")
    );
    assert!(host.run(&["renew"]).stdout.starts_with("www: not due"));
}

/// A CA problem reads as one line, whatever the CA put in it.
#[test]
fn ca_problems_are_one_line() {
    let fake = FakeAcme::start();
    fake.configure(|b| b.profiles = lets_encrypt_profiles());
    let host = Host::new();
    // The fake refuses an unknown profile with invalidProfile; certkeeper checks first, so
    // provoke a CA answer another way: a rate limit.
    fake.rate_limit_new_orders(1, Duration::from_secs(7200));
    host.config(&fake, "30d", "");
    let run = host.run(&["renew"]);
    let line = run.stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(
            "www: FAILED: issuer fake: new order: the CA answered HTTP 429 rateLimited: "
        ),
        "{run:?}"
    );
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
}

/// An issuer whose directory cannot be reached is opened once per pass for all its
/// certificates: ten certificates cost one opening's retries, not ten.
#[test]
fn an_unreachable_directory_is_tried_once_per_pass_for_all_certificates() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Accepts and hangs up at once: every request fails without an answer.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let host = Host::new();
    let mut yaml = format!(
        "state_dir: state\n\
         issuers:\n  down:\n    type: acme\n    directory: http://127.0.0.1:{port}/dir\n\
         dns_providers:\n  hook:\n    type: exec\n    command: [hooks/log]\n\
         renewal:\n  concurrency: 10\n\
         certificates:\n"
    );
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - name: c{i}\n    domains: [c{i}.example.test]\n    issuer: down\n    dns_provider: hook\n    \
             fullchain: live/c{i}/fullchain.pem\n    privkey: live/c{i}/privkey.pem\n"
        ));
    }
    host.dir.config(&yaml);
    let started = std::time::Instant::now();
    let run = host.run(&["renew"]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.contains(": FAILED: issuer down: cannot reach the ACME server"))
            .count(),
        10,
        "{run:?}"
    );
    // One opening: four attempts (waits of 1 s, 2 s and 4 s), whatever the number of
    // certificates.
    let n = connections.load(Ordering::SeqCst);
    assert!(n <= 8, "{n} connections for one directory");
    // The waits of one opening are 7 s; one opening per certificate would be 70 s. The count
    // of connections above is the proof, this a wide bound beside it.
    assert!(took < Duration::from_secs(60), "{took:?}");
}

/// Requests the fake received whose path starts with `prefix`.
fn requests_to(fake: &FakeAcme, prefix: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path.starts_with(prefix))
        .count()
}

/// A newNonce answered 429 with Retry-After says so (not "missing data"), and the CA's time
/// sets the next attempt: no retries against three hours, the certificate waits.
#[test]
fn a_rate_limited_new_nonce_is_reported_with_the_cas_retry_after() {
    let fake = FakeAcme::start();
    fake.rate_limit(path::NEW_NONCE, 100, Duration::from_secs(3 * 3600));
    let host = Host::new();
    host.config(&fake, "30d", "");
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let line = run.stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("www: FAILED: issuer fake: ")
            && line.contains("the CA answered HTTP 429 rateLimited: newNonce ")
            && !line.contains("missing data"),
        "{run:?}"
    );
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
    assert_eq!(requests_to(&fake, path::NEW_NONCE), 1, "retried anyway");
    let next = state_of(&host)["next_attempt"].as_i64().unwrap();
    assert!(
        (next - started - 3 * 3600).abs() < 60,
        "next attempt {next}, expected about {}",
        started + 3 * 3600
    );
}

/// A newAccount answered 429 with Retry-After (opening the account, before any order) holds
/// the certificate back until the CA's time, and the failure's kind is `rate_limited` in the
/// record and the metrics.
#[test]
fn a_rate_limited_new_account_sets_the_next_attempt_to_the_cas_time() {
    let fake = FakeAcme::start();
    fake.rate_limit(path::NEW_ACCOUNT, 100, Duration::from_secs(3 * 3600));
    let host = Host::new();
    host.config(&fake, "30d", "");
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let line = run.stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("www: FAILED: issuer fake: ")
            && line.contains("the CA answered HTTP 429 rateLimited: "),
        "{run:?}"
    );
    assert_eq!(requests_to(&fake, path::NEW_ORDER), 0, "{run:?}");
    let state = state_of(&host);
    let next = state["next_attempt"].as_i64().unwrap();
    assert!(
        (next - started - 3 * 3600).abs() < 60,
        "next attempt {next}, expected about {}",
        started + 3 * 3600
    );
    assert_eq!(state["last_cause"], "rate_limited");
    let samples = crate::metrics::parse(&host.run(&["metrics"]).stdout);
    assert_eq!(
        crate::metrics::value(
            &samples,
            "certkeeper_certificate_last_result",
            &[
                ("name", "www"),
                ("result", "failed"),
                ("cause", "rate_limited")
            ]
        ),
        Some(1.0)
    );
}

/// A short Retry-After on newNonce is waited out and the order goes on.
#[test]
fn a_new_nonce_429_with_a_short_retry_after_is_waited_out() {
    let fake = FakeAcme::start();
    fake.rate_limit(path::NEW_NONCE, 1, Duration::from_secs(2));
    let host = Host::new();
    host.config(&fake, "30d", "");
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let nonces: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == path::NEW_NONCE)
        .collect();
    assert!(nonces.len() >= 2, "{nonces:#?}");
    let waited = nonces[1].at.duration_since(nonces[0].at).unwrap();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
}

/// An answer larger than certkeeper reads (1 MiB) is reported as too large, once: it is not
/// the network, and asking again gets the same answer.
#[test]
fn an_oversized_answer_is_too_large_and_not_retried() {
    for prefix in [path::DIRECTORY, path::NEW_ORDER] {
        let fake = FakeAcme::start();
        fake.oversize(prefix, 100, 2 * 1024 * 1024);
        let host = Host::new();
        host.config(&fake, "30d", "");
        let run = host.run(&["renew"]);
        assert_eq!(run.code, 1, "{prefix}: {run:?}");
        let line = run.stdout.lines().next().unwrap_or_default();
        assert!(
            line.starts_with("www: FAILED: issuer fake: ")
                && line.contains("is larger than 1024 KiB")
                && line.contains(prefix)
                && !line.contains("cannot reach"),
            "{prefix}: {run:?}"
        );
        assert_eq!(requests_to(&fake, prefix), 1, "{prefix}: retried: {run:?}");
    }
}
