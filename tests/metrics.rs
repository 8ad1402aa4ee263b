//! `certkeeper metrics` and `renew --textfile` through the binary, read back by a strict
//! parser of the Prometheus text format: every family has its HELP and TYPE before its
//! samples, names and labels are well formed, values are numbers, and every
//! per-certificate sample carries `name="..."`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use crate::util::{Dir, Run};

/// One sample: metric name, labels, value.
#[derive(Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Parses the text exposition format strictly; panics with the offending line.
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    let mut declared: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut out = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad HELP: {line}"));
            assert!(valid_name(name) && !help.is_empty(), "bad HELP: {line}");
            declared.entry(name.to_owned()).or_default().0 = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad TYPE: {line}"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE: {line}"
            );
            let d = declared.entry(name.to_owned()).or_default();
            assert!(!d.1, "TYPE twice: {line}");
            d.1 = true;
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.trim().is_empty(),
            "stray line: {line:?}"
        );
        let (head, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(valid_name(k), "bad label name: {line}");
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (n, labels)
            }
            None => (head, BTreeMap::new()),
        };
        assert!(valid_name(name), "bad metric name: {line}");
        assert_eq!(
            declared.get(name),
            Some(&(true, true)),
            "sample before its HELP and TYPE: {line}"
        );
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn config() -> String {
    "state_dir: state\n\
     issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n  \
     broken:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n\
     dns_providers:\n  hook:\n    type: exec\n    command: [/bin/true]\n\
     certificates:\n\
     \x20 - name: www\n    domains: [www.test]\n    issuer: internal\n    fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n\
     \x20 - name: bad\n    domains: [bad.test]\n    issuer: broken\n    dns_provider: hook\n    fullchain: live/bad/fullchain.pem\n    privkey: live/bad/privkey.pem\n"
        .to_owned()
}

fn not_after_of(dir: &Dir) -> f64 {
    let run = dir.run(&["check", "--json", "www"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let t = time::OffsetDateTime::parse(
        v[0]["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    t.unix_timestamp() as f64
}

#[test]
fn metrics_and_the_textfile_describe_every_certificate() {
    let dir = Dir::new();
    dir.config(&config());
    let textfile = dir.join("textfile/certkeeper.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let run = dir.run(&["renew", "--textfile", textfile.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");

    let run: Run = dir.run(&["metrics"]);
    assert_eq!(run.code, 0, "{run:?}");
    let samples = parse(&run.stdout);
    assert!(
        samples
            .iter()
            .filter(|s| s.name.starts_with("certkeeper_certificate_"))
            .all(|s| s.labels.contains_key("name"))
    );
    let www = [("name", "www")];
    let bad = [("name", "bad")];
    assert_eq!(
        value(&samples, "certkeeper_certificate_not_after_seconds", &www),
        Some(not_after_of(&dir))
    );
    assert_eq!(
        value(&samples, "certkeeper_certificate_not_after_seconds", &bad),
        None,
        "nothing is live for bad"
    );
    assert!(
        value(
            &samples,
            "certkeeper_certificate_last_success_timestamp_seconds",
            &www
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        value(
            &samples,
            "certkeeper_certificate_last_success_timestamp_seconds",
            &bad
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "certkeeper_certificate_consecutive_failures",
            &www
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "certkeeper_certificate_consecutive_failures",
            &bad
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "certkeeper_certificate_last_result",
            &[("name", "bad"), ("result", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "certkeeper_certificate_last_result",
            &[("name", "www"), ("result", "renewed")]
        ),
        Some(1.0)
    );
    assert!(
        !samples
            .iter()
            .any(|s| s.name.starts_with("certkeeper_pass_"))
    );

    // The textfile: the same families plus the pass, written whole, readable by the
    // collector, nothing else left in its directory.
    let text = std::fs::read_to_string(&textfile).unwrap();
    let pass = parse(&text);
    assert_eq!(
        value(
            &pass,
            "certkeeper_pass_certificates",
            &[("outcome", "renewed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &pass,
            "certkeeper_pass_certificates",
            &[("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert!(value(&pass, "certkeeper_pass_duration_seconds", &[]).unwrap() > 0.0);
    assert_eq!(
        value(&pass, "certkeeper_certificate_consecutive_failures", &bad),
        Some(1.0)
    );
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<String> = std::fs::read_dir(textfile.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["certkeeper.prom"]);

    // A pass that finds www not due notes it in the pass record, not in www's own record:
    // the metrics say `ok`, looked at by that pass.
    let record = dir.join("state/state/www.json");
    let before = std::fs::read(&record).unwrap();
    let run = dir.run(&["renew", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read(&record).unwrap(), before);
    let samples = parse(&dir.run(&["metrics"]).stdout);
    let result = |r: &str| {
        value(
            &samples,
            "certkeeper_certificate_last_result",
            &[("name", "www"), ("result", r)],
        )
    };
    assert_eq!((result("ok"), result("renewed")), (Some(1.0), None));
    let looked = value(
        &samples,
        "certkeeper_certificate_last_attempt_timestamp_seconds",
        &www,
    )
    .unwrap();
    let success = value(
        &samples,
        "certkeeper_certificate_last_success_timestamp_seconds",
        &www,
    )
    .unwrap();
    assert!(looked >= success, "{looked} {success}");
}

#[test]
fn a_monitoring_user_gets_what_it_can_read_and_no_made_up_zeros() {
    if !crate::util::is_root() {
        panic!("this test drops from root to nobody; run the suite as root (CI does)");
    }
    let dir = Dir::new();
    dir.config(&config());
    assert_eq!(dir.run(&["renew"]).code, 1);
    // Only the way to the config and the live files is opened, as on a real host; state_dir
    // stays as certkeeper made it (entered by all, its records private).
    dir.open_way_to_live(&["www"]);
    let config_path = dir.join("config.yaml");
    let run = crate::util::as_nobody(&[
        crate::util::bin(),
        "--config",
        config_path.to_str().unwrap(),
        "metrics",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let samples = parse(&run.stdout);
    assert_eq!(
        value(
            &samples,
            "certkeeper_certificate_not_after_seconds",
            &[("name", "www")]
        ),
        Some(not_after_of(&dir))
    );
    assert!(
        !samples
            .iter()
            .any(|s| s.name == "certkeeper_certificate_consecutive_failures"),
        "state it cannot read reported as zeros: {run:?}"
    );
}
