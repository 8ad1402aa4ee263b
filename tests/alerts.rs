//! Alerts through the real binary against faithful fake receivers (tests/util/sinks.rs):
//! `alert test` against every vendor, with the signatures each one checks; each event
//! (`renewed`, `failed`, `rolled_back`, `rollback_failed`, `expiring`) arriving where the
//! `on` filters say and nowhere else; channels that are down, hang, or fail first; the
//! same failure once per `alert_repeat`, and the recovery alert; and no secret or webhook
//! URL in any output.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::fixtures::{LeafSpec, Pki};
use crate::util::sinks::{Behaviour, Sink, Vendor, WEBHOOK_KEYS, down_url};
use crate::util::{Dir, Run};

/// Secrets written to files under `secrets/`, and the config lines that name them.
struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets { values: Vec::new() }
    }

    /// Writes `value` to `secrets/<file>` and returns the path for a `*_file` key.
    fn file(&mut self, dir: &Dir, file: &str, value: &str) -> String {
        self.values.push(value.to_owned());
        dir.write(&format!("secrets/{file}"), value)
            .display()
            .to_string()
    }

    /// Runs the binary in `dir` and asserts that no secret shows in what it printed.
    fn run(&self, dir: &Dir, args: &[&str]) -> Run {
        let run = dir.run(args);
        self.assert_absent(&run);
        run
    }

    /// Asserts that no secret (nor a URL's token) shows in what a run printed.
    fn assert_absent(&self, run: &Run) {
        for value in &self.values {
            let mut parts = vec![value.as_str()];
            if let Some((_, rest)) = value.split_once("://")
                && let Some(at) = rest.find('/')
            {
                parts.push(&rest[at..]);
                for pair in rest[at..].split(['?', '&']) {
                    parts.extend(
                        pair.split_once('=')
                            .map(|(_, v)| v)
                            .filter(|v| v.len() >= 8),
                    );
                }
            }
            for part in parts {
                assert!(
                    !run.stdout.contains(part) && !run.stderr.contains(part),
                    "secret {part:?} printed: {run:?}"
                );
            }
        }
    }
}

/// A local CA issuer `internal`, an ACME issuer `broken` that nothing answers, and `alerts`.
fn config(alerts: &str, certs: &str) -> String {
    format!(
        "state_dir: state\n\
         issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n  \
         broken:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n\
         dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
         renewal:\n  retry: {{ initial: 1h, max: 1d }}\n\
         alerts:\n{alerts}\
         certificates:{}",
        if certs.is_empty() {
            " []\n".to_owned()
        } else {
            format!("\n{certs}")
        }
    )
}

fn cert(name: &str, issuer: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    domains: [{name}.test]\n    issuer: {issuer}\n    dns_provider: hook\n    \
         fullchain: live/{name}/fullchain.pem\n    privkey: live/{name}/privkey.pem\n{extra}"
    )
}

/// A generic webhook channel named `name` to `sink`, signed with `whsec-<name>-0123456789`
/// (start the sink with that secret), taking `on` (the default when empty).
fn webhook(secrets: &mut Secrets, dir: &Dir, name: &str, sink: &Sink, on: &str) -> String {
    let secret = secrets.file(
        dir,
        &format!("{name}.secret"),
        &format!("whsec-{name}-0123456789"),
    );
    let url = secrets.file(dir, &format!("{name}.url"), &sink.url());
    let on = if on.is_empty() {
        String::new()
    } else {
        format!("    on: [{on}]\n")
    };
    format!(
        "  - type: webhook\n    name: {name}\n    url_file: {url}\n    secret_file: {secret}\n{on}"
    )
}

/// What a webhook sink received: (event, certificate) of each accepted request.
fn received(sink: &Sink) -> Vec<(String, String)> {
    sink.accepted()
        .iter()
        .map(|r| {
            let v = r.json.clone().unwrap_or(Value::Null);
            (
                v["event"].as_str().unwrap_or_default().to_owned(),
                v["certificate"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn alert_test_reports_what_each_vendor_answered() {
    let dir = Dir::new();
    let mut secrets = Secrets::new();
    let slack = Sink::start(Vendor::Slack, None, Behaviour::Normal);
    let hook = Sink::start(
        Vendor::Webhook,
        Some("whsec-test-0123456789"),
        Behaviour::Normal,
    );
    let wecom = Sink::start(Vendor::WeCom, None, Behaviour::Normal);
    let ding = Sink::start(
        Vendor::DingTalk,
        Some("SECdingtalk0123456789abcdef"),
        Behaviour::Normal,
    );
    let feishu = Sink::start(
        Vendor::Feishu,
        Some("feishu-secret-0123456789"),
        Behaviour::Normal,
    );
    let mut alerts = String::new();
    alerts.push_str(&format!(
        "  - type: slack\n    webhook_url_file: {}\n",
        secrets.file(&dir, "slack", &slack.url())
    ));
    alerts.push_str(&format!(
        "  - type: webhook\n    url_file: {}\n    secret_file: {}\n",
        secrets.file(&dir, "hook.url", &hook.url()),
        secrets.file(&dir, "hook.secret", "whsec-test-0123456789")
    ));
    alerts.push_str(&format!(
        "  - type: wecom\n    webhook_url_file: {}\n",
        secrets.file(&dir, "wecom", &wecom.url())
    ));
    alerts.push_str(&format!(
        "  - type: dingtalk\n    name: ops\n    webhook_url_file: {}\n    secret_file: {}\n",
        secrets.file(&dir, "ding.url", &ding.url()),
        secrets.file(&dir, "ding.secret", "SECdingtalk0123456789abcdef")
    ));
    alerts.push_str(&format!(
        "  - type: feishu\n    webhook_url_file: {}\n    secret_file: {}\n",
        secrets.file(&dir, "feishu.url", &feishu.url()),
        secrets.file(&dir, "feishu.secret", "feishu-secret-0123456789")
    ));
    dir.config(&config(&alerts, ""));
    let run = secrets.run(&dir, &["alert", "test"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "slack (slack): delivered: HTTP 200 ok\n\
         webhook (webhook): delivered: HTTP 204\n\
         wecom (wecom): delivered: errcode 0 (ok)\n\
         ops (dingtalk): delivered: errcode 0 (ok)\n\
         feishu (feishu): delivered: code 0 (success)\n",
        "{run:?}"
    );
    for sink in [&slack, &hook, &wecom, &ding, &feishu] {
        assert_eq!(sink.accepted().len(), 1, "{:?}", sink.requests());
    }
    let body = hook.accepted()[0].json.clone().unwrap();
    assert_eq!(body["event"], "test");
    let slack_body = slack.accepted()[0].json.clone().unwrap();
    assert!(slack_body["text"].as_str().unwrap().contains("test alert"));
    secrets.assert_absent(&run);

    // One channel by name; the others get nothing more.
    let run = secrets.run(&dir, &["alert", "test", "ops"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ding.accepted().len(), 2);
    assert_eq!(slack.requests().len(), 1);
    let run = secrets.run(&dir, &["alert", "test", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "no alert channel named nope; configured: slack, webhook, wecom, ops, feishu"
        ),
        "{run:?}"
    );

    // Wrong credentials: each vendor's own error, reported per channel, exit 1.
    std::fs::write(dir.join("secrets/wecom"), wecom.url_with_wrong_token()).unwrap();
    std::fs::write(dir.join("secrets/ding.secret"), "SECwrong-wrong-wrong").unwrap();
    std::fs::write(dir.join("secrets/feishu.secret"), "wrong-secret-0000").unwrap();
    std::fs::write(dir.join("secrets/hook.secret"), "whsec-wrong-000000").unwrap();
    let mut wrong = Secrets::new();
    wrong.values = secrets.values.clone();
    wrong.values.extend([
        wecom.url_with_wrong_token(),
        "SECwrong-wrong-wrong".into(),
        "wrong-secret-0000".into(),
        "whsec-wrong-000000".into(),
    ]);
    let run = wrong.run(&dir, &["alert", "test"]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "slack (slack): delivered: HTTP 200 ok", "{run:?}");
    assert_eq!(
        lines[1], "webhook (webhook): NOT DELIVERED: HTTP 401: signature mismatch",
        "{run:?}"
    );
    assert!(
        lines[2].starts_with("wecom (wecom): NOT DELIVERED: error 93000: invalid webhook url"),
        "{run:?}"
    );
    assert_eq!(
        lines[3], "ops (dingtalk): NOT DELIVERED: error 310000: sign not match",
        "{run:?}"
    );
    assert_eq!(
        lines[4],
        "feishu (feishu): NOT DELIVERED: error 19021: sign match fail or timestamp is not within one hour from current time",
        "{run:?}"
    );
    wrong.assert_absent(&run);
}

#[test]
fn each_event_arrives_where_the_on_filters_say_and_nowhere_else() {
    let dir = Dir::new();
    let mut secrets = Secrets::new();
    let renewed = Sink::start(
        Vendor::Webhook,
        Some("whsec-renewed-0123456789"),
        Behaviour::Normal,
    );
    let failures = Sink::start(
        Vendor::Webhook,
        Some("whsec-failures-0123456789"),
        Behaviour::Normal,
    );
    let critical = Sink::start(Vendor::Slack, None, Behaviour::Normal);
    let slack_url = secrets.file(&dir, "slack", &critical.url());
    let alerts = format!(
        "{}{}  - type: slack\n    webhook_url_file: {slack_url}\n    on: [rollback_failed]\n",
        webhook(&mut secrets, &dir, "renewed", &renewed, "renewed"),
        webhook(&mut secrets, &dir, "failures", &failures, ""),
    );
    // `expiring` has a live leaf from elsewhere that expires in three days.
    let pki = Pki::new("Other");
    let leaf = pki.leaf(LeafSpec::new(&["exp.test"], 3));
    dir.write("live/exp/fullchain.pem", leaf.fullchain());
    dir.write("live/exp/privkey.pem", &leaf.key_pem);
    let certs = |rb_verify: &str, rf_verify: &str| {
        format!(
            "{}{}{}{}{}",
            cert("good", "internal", ""),
            cert("bad", "broken", ""),
            cert("rb", "internal", rb_verify),
            cert("rf", "internal", rf_verify),
            cert("exp", "broken", ""),
        )
    };
    dir.config(&config(&alerts, &certs("", "")));
    let run = secrets.run(&dir, &["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    // renewed: good, rb, rf to the channel that takes renewed; failed: bad, exp, and
    // expiring: exp, to the default channel; nothing to Slack.
    let mut got = received(&renewed);
    got.sort();
    assert_eq!(
        got,
        pairs(&[("renewed", "good"), ("renewed", "rb"), ("renewed", "rf")])
    );
    let mut got = received(&failures);
    got.sort();
    assert_eq!(
        got,
        pairs(&[("expiring", "exp"), ("failed", "bad"), ("failed", "exp")])
    );
    assert!(critical.requests().is_empty());
    let body = failures.accepted()[0].json.clone().unwrap();
    for key in WEBHOOK_KEYS {
        assert!(body.get(key).is_some(), "{key} missing from {body}");
    }
    let expiring = failures
        .accepted()
        .into_iter()
        .find(|r| r.json.as_ref().unwrap()["event"] == "expiring")
        .unwrap();
    let message = expiring.json.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("expires in") && message.contains("last renewal failed"),
        "{message}"
    );
    secrets.assert_absent(&run);

    // rolled_back (rb's health check accepts only its current leaf) and rollback_failed (rf's
    // health check never passes, not even for the restored pair).
    let fingerprint = certkeeper::x509::read_certificates(
        &std::fs::read(dir.join("live/rb/fullchain.pem")).unwrap(),
    )
    .unwrap()
    .0[0]
        .fingerprint
        .clone();
    let only_current = dir.write(
        "only-current.sh",
        format!("#!/bin/sh\ntest \"$CERTKEEPER_FINGERPRINT\" = {fingerprint}\n"),
    );
    std::fs::set_permissions(
        &only_current,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir.config(&config(
        &alerts,
        &certs(
            &format!(
                "    verify: {{ command: [\"{}\"], timeout: 1s }}\n",
                only_current.display()
            ),
            "    verify: { command: [/bin/false], timeout: 1s }\n",
        ),
    ));
    let run = secrets.run(&dir, &["renew", "--force", "rb", "rf"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("rb: ROLLED BACK") && run.stdout.contains("rf: ROLLBACK FAILED"),
        "{run:?}"
    );
    let mut got = received(&failures)[3..].to_vec();
    got.sort();
    assert_eq!(
        got,
        pairs(&[("rollback_failed", "rf"), ("rolled_back", "rb")])
    );
    assert_eq!(critical.accepted().len(), 1, "{:?}", critical.requests());
    let slack_text = critical.accepted()[0].json.clone().unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        slack_text.starts_with("certkeeper: rf ROLLBACK FAILED, act now on "),
        "{slack_text}"
    );
    assert_eq!(received(&renewed).len(), 3, "no renewed event this time");
    secrets.assert_absent(&run);
}

#[test]
fn channels_that_are_down_hang_or_fail_first_do_not_hold_up_the_pass() {
    let dir = Dir::new();
    let mut secrets = Secrets::new();
    let hang = Sink::start(
        Vendor::Webhook,
        Some("whsec-hang-0123456789"),
        Behaviour::Hang,
    );
    let flaky = Sink::start(
        Vendor::Webhook,
        Some("whsec-flaky-0123456789"),
        Behaviour::FailFirst {
            count: 1,
            status: 500,
        },
    );
    let down_url = secrets.file(&dir, "down.url", &format!("{}/hooks/certs", down_url()));
    let alerts = format!(
        "{}{}  - type: webhook\n    name: down\n    url_file: {down_url}\n",
        webhook(&mut secrets, &dir, "hang", &hang, ""),
        webhook(&mut secrets, &dir, "flaky", &flaky, ""),
    );
    dir.config(&config(&alerts, &cert("bad", "broken", "")));
    let started = Instant::now();
    let run = secrets.run(&dir, &["renew"]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("bad: FAILED: "), "{run:?}");
    // The renewal itself fails fast (nothing answers the CA); delivery is bounded by 10 s.
    assert!(
        took < Duration::from_secs(20),
        "the pass took {took:?}: {run:?}"
    );
    assert_eq!(
        received(&flaky),
        pairs(&[("failed", "bad")]),
        "{:?}",
        flaky.requests()
    );
    assert_eq!(flaky.requests().len(), 2, "500, then delivered");
    let failures: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("Alert not delivered"))
        .collect();
    assert_eq!(failures.len(), 2, "one line per failed channel: {run:?}");
    assert!(failures.iter().any(|l| l.contains("hang")), "{run:?}");
    assert!(failures.iter().any(|l| l.contains("down")), "{run:?}");
    assert!(!failures.iter().any(|l| l.contains("flaky")), "{run:?}");
    secrets.assert_absent(&run);
}

#[test]
fn the_same_failure_alerts_once_per_alert_repeat_and_recovery_always_alerts() {
    let dir = Dir::new();
    let mut secrets = Secrets::new();
    let sink = Sink::start(
        Vendor::Webhook,
        Some("whsec-ops-0123456789"),
        Behaviour::Normal,
    );
    let alerts = webhook(&mut secrets, &dir, "ops", &sink, "");
    let yaml = |issuer: &str| {
        config(&alerts, &cert("www", issuer, ""))
            .replace("alerts:\n", "alert_repeat: 1h\nalerts:\n")
    };
    dir.config(&yaml("broken"));
    let run = secrets.run(&dir, &["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(received(&sink), pairs(&[("failed", "www")]), "{run:?}");
    // The same failure again (forced past the backoff): not alerted again within the hour.
    let run = secrets.run(&dir, &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        received(&sink).len(),
        1,
        "alerted twice within alert_repeat"
    );
    // An hour later (the alert memory says so), it alerts again.
    let state_file = dir.join("state/alerted.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let sent = state["www"]["failed"]
        .as_i64()
        .expect("the alert is remembered");
    state["www"]["failed"] = Value::from(sent - 3601);
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(secrets.run(&dir, &["renew", "--force"]).code, 1);
    assert_eq!(received(&sink).len(), 2);
    // Recovery: a renewal after failures reaches this channel although it does not take
    // `renewed`, and says how many attempts failed.
    dir.config(&yaml("internal"));
    let run = secrets.run(&dir, &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let got = sink.accepted();
    assert_eq!(got.len(), 3);
    let last = got[2].json.clone().unwrap();
    assert_eq!(last["event"], "renewed");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("after 3 failed attempts"),
        "{last}"
    );
    assert!(
        last["snapshot"].is_null() && last["not_after"].is_string(),
        "{last}"
    );
    // The memory is cleared: the next failure alerts at once; a plain renewal does not.
    dir.config(&yaml("broken"));
    assert_eq!(secrets.run(&dir, &["renew", "--force"]).code, 1);
    assert_eq!(received(&sink).len(), 4);
    dir.config(&yaml("internal"));
    assert_eq!(secrets.run(&dir, &["renew", "--force"]).code, 0);
    assert_eq!(received(&sink).len(), 5, "recovery again");
    assert_eq!(secrets.run(&dir, &["renew", "--force"]).code, 0);
    assert_eq!(
        received(&sink).len(),
        5,
        "a renewal with nothing before it is not news here"
    );
    secrets.assert_absent(&run);
}

/// A health check that passes only for the leaf live now (its fingerprint kept in a file):
/// a new pair fails it, the restored one passes, so a deploy is rolled back.
fn pinned_health(dir: &Dir, name: &str) -> String {
    let live = std::fs::read(dir.join(&format!("live/{name}/fullchain.pem"))).unwrap();
    let (certs, _) = certkeeper::x509::read_certificates(&live).unwrap();
    let pin = dir.write(&format!("{name}.pin"), &certs[0].fingerprint);
    format!(
        "    verify: {{ command: [sh, -c, 'test \"$CERTKEEPER_FINGERPRINT\" = \"$(cat {})\"'], timeout: 1s }}\n",
        pin.display()
    )
}

/// A reload command that fails every other time it runs, first time failing: the reload of
/// a new pair fails, the one after the revert succeeds.
fn flip_flop_reload(dir: &Dir) -> String {
    let flag = dir.join("reload.flag");
    format!(
        "    reload: {{ command: [sh, -c, 'if [ -e {f} ]; then rm {f}; else touch {f}; exit 1; fi'], timeout: 5s }}\n",
        f = flag.display()
    )
}

/// Each failure says its kind, the same in the metric's `cause` label and the alert's
/// `cause_kind`: a DNS provider that fails (its token is missing; the fake CA needs no
/// record, so it fails where it is built), a CA that refuses the order, and a service that
/// does not pass verification.
#[test]
fn failures_say_their_kind_in_the_metric_and_the_alert() {
    use crate::util::fake_acme::{FakeAcme, path};
    let dir = Dir::new();
    let mut secrets = Secrets::new();
    let sink = Sink::start(
        Vendor::Webhook,
        Some("whsec-ops-0123456789"),
        Behaviour::Normal,
    );
    let alerts = webhook(&mut secrets, &dir, "ops", &sink, "");
    let open = FakeAcme::start();
    let refusing = FakeAcme::start();
    refusing.refuse(path::NEW_ORDER, 100, 403, "unauthorized");
    let open_root = open.write_root(dir.join("open-root.pem"));
    let refusing_root = refusing.write_root(dir.join("refusing-root.pem"));
    let acme = |name: &str, fake: &FakeAcme, root: &std::path::Path| {
        format!(
            "  {name}:\n    type: acme\n    directory: {}\n    trust_roots: {}\n",
            fake.directory_url(),
            root.display()
        )
    };
    // The verified certificate has a pair live first, so that its refusal is a rollback.
    dir.config(&config("", &cert("verify", "internal", "")).replace("alerts:\n", ""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let certs = format!(
        "{}{}{}",
        cert("dns", "open", "").replace("dns_provider: hook", "dns_provider: failing"),
        cert("ca", "refusing", ""),
        cert("verify", "internal", &pinned_health(&dir, "verify")),
    );
    let yaml = config(&alerts, &certs)
        .replace(
            "issuers:\n",
            &format!(
                "issuers:\n{}{}",
                acme("open", &open, &open_root),
                acme("refusing", &refusing, &refusing_root)
            ),
        )
        .replace(
            "dns_providers:\n",
            "dns_providers:\n  failing:\n    type: cloudflare\n    api_token_env: CERTKEEPER_TEST_NO_SUCH_TOKEN\n",
        );
    dir.config(&yaml);
    let run = secrets.run(&dir, &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let expected = [("dns", "dns"), ("ca", "ca_refused"), ("verify", "verify")];
    let samples = crate::metrics::parse(&dir.run(&["metrics"]).stdout);
    let event_of = |name: &str| {
        if name == "verify" {
            "rolled_back"
        } else {
            "failed"
        }
    };
    for (name, kind) in expected {
        assert_eq!(
            crate::metrics::value(
                &samples,
                "certkeeper_certificate_last_result",
                &[("name", name), ("result", event_of(name)), ("cause", kind)]
            ),
            Some(1.0),
            "{name}: {run:?}"
        );
    }
    let mut got: Vec<(String, String, String)> = sink
        .accepted()
        .iter()
        .map(|r| {
            let v = r.json.clone().unwrap_or(Value::Null);
            (
                v["certificate"].as_str().unwrap_or_default().to_owned(),
                v["event"].as_str().unwrap_or_default().to_owned(),
                v["cause_kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(n, k)| (n.to_string(), event_of(n).to_owned(), k.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want, "{run:?}");
}

/// Two rollbacks of one certificate within `alert_repeat`, one after a failed reload and one
/// after a failed verification, are two alerts; the same kind again is not.
#[test]
fn rollbacks_of_different_kinds_alert_separately() {
    let dir = Dir::new();
    let mut secrets = Secrets::new();
    let sink = Sink::start(
        Vendor::Webhook,
        Some("whsec-ops-0123456789"),
        Behaviour::Normal,
    );
    let alerts = webhook(&mut secrets, &dir, "ops", &sink, "");
    let yaml = |extra: &str| {
        config(&alerts, &cert("www", "internal", extra))
            .replace("alerts:\n", "alert_repeat: 1h\nalerts:\n")
    };
    // A pair live first, so that each refusal is a rollback.
    dir.config(&yaml(""));
    assert_eq!(secrets.run(&dir, &["renew"]).code, 0);
    let reload = flip_flop_reload(&dir);
    let verify = pinned_health(&dir, "www");
    dir.config(&yaml(&reload));
    let run = secrets.run(&dir, &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    dir.config(&yaml(&verify));
    let run = secrets.run(&dir, &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let run = secrets.run(&dir, &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let kinds: Vec<(String, String)> = sink
        .accepted()
        .iter()
        .filter(|r| r.json.as_ref().is_some_and(|v| v["event"] != "renewed"))
        .map(|r| {
            let v = r.json.clone().unwrap_or(Value::Null);
            (
                v["event"].as_str().unwrap_or_default().to_owned(),
                v["cause_kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        pairs(&[("rolled_back", "reload"), ("rolled_back", "verify")]),
        "{run:?}"
    );
}
