//! `rollback --hold` and `certkeeper release` through the real binary with the built-in
//! local CA: a held certificate is neither deployed (not even its kept material) nor
//! ordered, forced or not, and `check`, `verify` and `metrics` say it is held; `release`
//! ends the hold; the hold ends by itself once the live leaf is within half of
//! `before_expiry` of its notAfter, and says why; an `expiring` alert still fires for a
//! held certificate, once. Hostile: an unknown name, a hold written by a wrong clock, a
//! rollback that fails to serve (no hold), a record that is not a regular file.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::metrics::{parse, value};
use crate::util::Dir;
use crate::util::sinks::{Behaviour, Sink, Vendor};

/// A local CA issuing for `validity`, `before_expiry`, one certificate `www` with `extra`
/// lines, and `alerts` (a YAML list, or empty).
fn config(validity: &str, before_expiry: &str, extra: &str, alerts: &str) -> String {
    format!(
        "state_dir: state\n\
         issuers:\n  internal:\n    type: local-ca\n    validity: {validity}\n\
         renewal:\n  before_expiry: {before_expiry}\n  retry: {{ initial: 1h, max: 1d }}\n\
         {alerts}\
         certificates:\n  - name: www\n    domains: [www.test]\n    issuer: internal\n    \
         fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n{extra}"
    )
}

/// The live leaf's fingerprint, as `check --json` reports it.
fn live(dir: &Dir) -> String {
    entry(dir)["fingerprint"].as_str().unwrap().to_owned()
}

/// `www`'s `check --json` object.
fn entry(dir: &Dir) -> Value {
    let (_, v) = dir.check_json();
    v.into_iter().find(|e| e["name"] == "www").unwrap()
}

/// `certkeeper_certificate_held{name="www"}`.
fn held_gauge(dir: &Dir) -> Option<f64> {
    let run = dir.run(&["metrics"]);
    assert_eq!(run.code, 0, "{run:?}");
    value(
        &parse(&run.stdout),
        "certkeeper_certificate_held",
        &[("name", "www")],
    )
}

fn time_of(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

#[test]
fn a_held_certificate_is_not_deployed_until_released() {
    let dir = Dir::new();
    // Due on every pass (before_expiry longer than the validity): without the hold, each
    // pass would deploy a new certificate. Half of 100 days is still shorter than 90.
    dir.config(&config("90d", "100d", "", ""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let a = live(&dir);
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let b = live(&dir);
    assert_ne!(a, b);
    assert_eq!(entry(&dir)["held"], false);
    assert_eq!(held_gauge(&dir), Some(0.0));

    let run = dir.run(&["rollback", "www", "--hold"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("; held: no deploys or orders until `certkeeper release www`"),
        "{run:?}"
    );
    assert_eq!(live(&dir), a);

    // Neither a pass nor a forced one deploys or orders: held, exit 0.
    for args in [
        &["renew"][..],
        &["renew", "--force"],
        &["renew", "--force", "www"],
    ] {
        let run = dir.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(
            run.stdout
                .starts_with("www: held on the restored pair since "),
            "{run:?}"
        );
        assert_eq!(live(&dir), a, "{args:?} deployed while held");
    }
    // The daemon's one pass too, with the outcome counted as held.
    let run = dir.run(&["run", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(live(&dir), a);
    let textfile = dir.join("metrics.prom");
    let run = dir.run(&["renew", "--textfile", textfile.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let text = std::fs::read_to_string(dir.join("metrics.prom")).unwrap();
    let samples = parse(&text);
    assert_eq!(
        value(
            &samples,
            "certkeeper_pass_certificates",
            &[("outcome", "held")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&samples, "certkeeper_certificate_held", &[("name", "www")]),
        Some(1.0),
        "{text}"
    );

    // check, verify and metrics say it is held; its status is by its dates, as before.
    let e = entry(&dir);
    assert_eq!(e["held"], true, "{e:#}");
    assert_eq!(e["status"], "warning", "{e:#}");
    let since = time_of(&e["hold"]["since"]);
    let now = OffsetDateTime::now_utc();
    assert!(
        since <= now && now - since < time::Duration::hours(1),
        "{e:#}"
    );
    assert!(
        e["hold"]["by"].as_str().is_some_and(|b| !b.is_empty()),
        "{e:#}"
    );
    let not_after = time_of(&e["not_after"]);
    assert_eq!(
        time_of(&e["hold"]["ends"]),
        not_after - time::Duration::days(50),
        "{e:#}"
    );
    let table = dir.run(&["check"]);
    let row = table.stdout.lines().find(|l| l.contains(" www ")).unwrap();
    assert!(
        row.contains("held on the restored pair since ") && row.contains("certkeeper release www"),
        "{table:?}"
    );
    let report = dir.run(&["verify", "www"]);
    assert!(report.stdout.contains("  held "), "{report:?}");
    assert_eq!(held_gauge(&dir), Some(1.0));

    // A plain rollback leaves the hold as it is.
    let b_id = snapshot_of(&dir, &b);
    let run = dir.run(&["rollback", "www", "--to", &b_id]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("held"), "{run:?}");
    assert_eq!(live(&dir), b);
    assert_eq!(entry(&dir)["held"], true);
    let run = dir.run(&["renew"]);
    assert!(run.stdout.starts_with("www: held on "), "{run:?}");
    assert_eq!(live(&dir), b);

    // Released: the next pass renews as usual.
    let run = dir.run(&["release", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: released (held since "),
        "{run:?}"
    );
    assert_eq!(entry(&dir)["held"], false);
    assert!(entry(&dir)["hold"].is_null());
    assert_eq!(held_gauge(&dir), Some(0.0));
    let run = dir.run(&["release", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "www: not held; nothing to release\n", "{run:?}");
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );
    let c = live(&dir);
    assert!(c != a && c != b);
}

/// The id of the snapshot whose leaf is `fingerprint`.
fn snapshot_of(dir: &Dir, fingerprint: &str) -> String {
    let run = dir.run(&["snapshots", "--json", "www"]);
    let list: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    list.iter()
        .find(|s| s["fingerprint"] == fingerprint)
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no snapshot of {fingerprint}: {run:?}"))
}

#[test]
fn kept_material_waits_in_pending_while_held() {
    let dir = Dir::new();
    // The next reload fails once (the flag is used up), so the way back is served.
    let flag = dir.join("reload-fails");
    let reload = format!(
        "    reload:\n      command: [/bin/sh, -c, \"if [ -e {0} ]; then rm {0}; exit 1; fi\"]\n",
        flag.display()
    );
    dir.config(&config("90d", "100d", &reload, ""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let a = live(&dir);
    assert_eq!(dir.run(&["renew"]).code, 0);
    let b = live(&dir);
    // A refused reload: the new material is kept for a later pass.
    std::fs::write(&flag, "").unwrap();
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("ROLLED BACK"), "{run:?}");
    assert_eq!(live(&dir), b);
    let pending = dir.join("state/pending/www/fullchain.pem");
    let kept = std::fs::read(&pending).unwrap();
    assert!(!flag.exists());

    let run = dir.run(&["rollback", "www", "--hold"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(live(&dir), a);
    // Not even the kept material is deployed, and it stays kept (also after the backoff).
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: held on "), "{run:?}");
    assert_eq!(live(&dir), a);
    assert_eq!(std::fs::read(&pending).unwrap(), kept);

    let run = dir.run(&["release", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = dir.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("www: renewed from internal (issued by an earlier pass)"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        kept
    );
    assert!(!pending.exists());
}

#[test]
fn a_hold_ends_by_itself_near_expiry_and_says_why() {
    let dir = Dir::new();
    let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
    let alerts = format!(
        "alerts:\n  - type: webhook\n    url: {}\n    on: [renewed, failed, rolled_back, expiring]\n",
        sink.url()
    );
    // 8 days of validity, 20 days before expiry: the hold lasts until 10 days are left,
    // so a restored leaf of this CA is already past it.
    dir.config(&config("8d", "20d", "", &alerts));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let a = live(&dir);
    assert_eq!(dir.run(&["renew"]).code, 0);
    let run = dir.run(&["rollback", "www", "--hold"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(live(&dir), a);
    assert_eq!(entry(&dir)["held"], true);
    let before = sink.accepted().len();

    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );
    assert_ne!(live(&dir), a);
    let why = "the hold on www ended: the restored certificate expires in 7 days";
    assert!(
        run.stderr.contains("WARN") && run.stderr.contains(why),
        "{run:?}"
    );
    let renewed: Vec<Value> = sink.accepted()[before..]
        .iter()
        .filter_map(|r| r.json.clone())
        .filter(|v| v["event"] == "renewed")
        .collect();
    assert_eq!(renewed.len(), 1, "{:?}", sink.requests());
    assert!(
        renewed[0]["message"].as_str().unwrap().starts_with(why),
        "{:#}",
        renewed[0]
    );
    // The hold is gone from the record: the next pass is an ordinary one.
    assert_eq!(entry(&dir)["held"], false);
    assert_eq!(held_gauge(&dir), Some(0.0));
    let run = dir.run(&["renew"]);
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("hold"), "{run:?}");
}

#[test]
fn an_expiring_alert_fires_for_a_held_certificate_once() {
    let dir = Dir::new();
    let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
    let alerts = format!("alerts:\n  - type: webhook\n    url: {}\n", sink.url());
    // 6 days of validity, 10 days before expiry: held until 5 days are left, and within
    // the 7 days of `expiring` meanwhile.
    dir.config(&config("6d", "10d", "", &alerts));
    assert_eq!(dir.run(&["renew"]).code, 0);
    assert_eq!(dir.run(&["renew"]).code, 0);
    let run = dir.run(&["rollback", "www", "--hold"]);
    assert_eq!(run.code, 0, "{run:?}");
    let restored = live(&dir);
    let expiring = |sink: &Sink| -> Vec<Value> {
        sink.accepted()
            .iter()
            .filter_map(|r| r.json.clone())
            .filter(|v| v["event"] == "expiring")
            .collect()
    };
    assert!(expiring(&sink).is_empty());

    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: held on "), "{run:?}");
    assert_eq!(live(&dir), restored);
    let got = expiring(&sink);
    assert_eq!(got.len(), 1, "{:?}", sink.requests());
    assert_eq!(got[0]["certificate"], "www");
    let message = got[0]["message"].as_str().unwrap();
    assert!(
        message.contains("is held on the pair restored by `certkeeper rollback --hold`")
            && message.contains("certkeeper release www"),
        "{message}"
    );
    assert_eq!(
        got[0]["not_after"].as_str(),
        entry(&dir)["not_after"].as_str()
    );
    // Deduplicated as every repeated alert: not again within alert_repeat.
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(expiring(&sink).len(), 1, "{:?}", sink.requests());
}

#[test]
fn release_of_an_unknown_name_is_a_usage_error() {
    let dir = Dir::new();
    dir.config(&config("90d", "30d", "", ""));
    let run = dir.run(&["release", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [format!(
            "certkeeper: {}: no certificate named \"nope\"; configured: www",
            dir.join("config.yaml").display()
        )],
        "{run:?}"
    );
    assert!(run.stdout.is_empty());
    assert!(!dir.join("state").exists(), "a usage error wrote state_dir");
    let run = dir.run(&["release"]);
    assert_eq!(run.code, 2, "{run:?}");
    // Never held: said, and a success.
    let run = dir.run(&["release", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "www: not held; nothing to release\n");
    assert!(!dir.join("state/state/www.json").exists());
}

#[test]
fn a_hold_written_by_a_wrong_clock_is_taken_as_set_now() {
    let dir = Dir::new();
    dir.config(&config("90d", "100d", "", ""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let a = live(&dir);
    // Written while the clock was ten years ahead.
    let path = dir.join("state/state/www.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let ahead = OffsetDateTime::now_utc().unix_timestamp() + 10 * 365 * 86_400;
    record["hold"] = serde_json::json!({"since": ahead, "by": "root"});
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();

    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: held on "), "{run:?}");
    assert!(
        run.stderr.contains("hold.since is ")
            && run
                .stderr
                .contains("(the clock was wrong when it was written); taken as now"),
        "{run:?}"
    );
    assert_eq!(live(&dir), a);
    let e = entry(&dir);
    assert_eq!(e["held"], true);
    let since = time_of(&e["hold"]["since"]);
    assert!(
        since <= OffsetDateTime::now_utc() + time::Duration::minutes(5),
        "{e:#}"
    );
    assert_eq!(e["hold"]["by"], "root");
    let run = dir.run(&["release", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(dir.run(&["renew"]).code, 0);
    assert_ne!(live(&dir), a);
}

#[test]
fn a_rollback_that_fails_to_serve_sets_no_hold() {
    let dir = Dir::new();
    let flag = dir.join("reload-fails");
    let reload = format!(
        "    reload:\n      command: [/bin/sh, -c, \"test ! -e {}\"]\n",
        flag.display()
    );
    dir.config(&config("90d", "100d", &reload, ""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    assert_eq!(dir.run(&["renew"]).code, 0);
    let b = live(&dir);
    std::fs::write(&flag, "").unwrap();
    let run = dir.run(&["rollback", "www", "--hold"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("was restored but refused"), "{run:?}");
    assert!(!run.stdout.contains("held"), "{run:?}");
    std::fs::remove_file(&flag).unwrap();
    assert_eq!(live(&dir), b);
    assert_eq!(entry(&dir)["held"], false);
    assert_eq!(held_gauge(&dir), Some(0.0));
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("www: renewed from internal"),
        "{run:?}"
    );
}

#[test]
fn a_hold_that_cannot_be_written_fails_the_rollback_loudly() {
    let dir = Dir::new();
    dir.config(&config("90d", "100d", "", ""));
    assert_eq!(dir.run(&["renew"]).code, 0);
    let a = live(&dir);
    assert_eq!(dir.run(&["renew"]).code, 0);
    // Something that is not certkeeper's sits where the record goes.
    let path = dir.join("state/state/www.json");
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(made.success());
    let run = dir.run(&["rollback", "www", "--hold"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "certkeeper: rollback www: the rollback went through, but the hold was not set: "
        ),
        "{run:?}"
    );
    let errors = run.stderr.lines().filter(|l| l.starts_with("certkeeper:"));
    assert_eq!(errors.count(), 1, "{run:?}");
    assert!(!run.stdout.contains("held"), "{run:?}");
    // The rollback itself stands; the FIFO is left alone.
    assert_eq!(live(&dir), a);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
}
