//! Day one: `config check` runs what it can without side effects, `check` as a monitoring
//! user keeps what it could not read apart from the problems, and failures say what failed.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::util::{Dir, Run, as_nobody, bin};

fn local_ca(certs: &[&str]) -> String {
    let mut out =
        "state_dir: state\nissuers:\n  internal:\n    type: local-ca\ncertificates:\n".to_owned();
    for name in certs {
        out.push_str(&format!(
            "  - name: {name}\n    domains: [{name}.test]\n    issuer: internal\n    \
             fullchain: live/{name}/fullchain.pem\n    privkey: live/{name}/privkey.pem\n"
        ));
    }
    out
}

fn check_as_nobody(dir: &Dir, json: bool) -> Run {
    let config = dir.join("config.yaml");
    let mut args = vec![bin(), "--config", config.to_str().unwrap(), "check"];
    if json {
        args.push("--json");
    }
    as_nobody(&args)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn check_as_a_monitoring_user_keeps_what_it_could_not_read_apart_from_problems() {
    let dir = Dir::new();
    dir.config(&local_ca(&["www"]));
    assert_eq!(dir.run(&["renew"]).code, 0);
    dir.open_way_to_live(&["www"]);
    // The key stays as certkeeper made it: 0600 root.
    let key = std::fs::metadata(dir.join("live/www/privkey.pem")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    let run = check_as_nobody(&dir, true);
    assert_eq!(run.code, 0, "{run:?}");
    let entries: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"));
    let e = &entries[0];
    assert_eq!(e["status"], "ok", "{e:#}");
    assert!(strings(&e["problems"]).is_empty(), "{e:#}");
    let not_checked = strings(&e["not_checked"]);
    assert_eq!(not_checked.len(), 1, "{e:#}");
    assert!(not_checked[0].starts_with("privkey not checked: not readable by this user"));

    let run = check_as_nobody(&dir, false);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("CERTKEEPER OK - 1 certificate: 0 critical, 0 warning, 1 ok\n"),
        "{run:?}"
    );
    let row = run.stdout.lines().find(|l| l.starts_with("ok ")).unwrap();
    assert!(
        row.ends_with(" -"),
        "the problems column is not empty: {run:?}"
    );
    assert!(
        run.stdout
            .contains("\nnot checked: www: privkey not checked: not readable by this user"),
        "{run:?}"
    );

    // As root everything is read: nothing is left unchecked.
    let (code, entries) = dir.check_json();
    assert_eq!(code, 0);
    assert!(
        strings(&entries[0]["not_checked"]).is_empty(),
        "{entries:?}"
    );
}

#[test]
fn check_is_unknown_when_nothing_could_be_checked_and_the_checked_status_otherwise() {
    let dir = Dir::new();
    dir.config(&local_ca(&["www", "api"]));
    assert_eq!(dir.run(&["renew"]).code, 0);
    dir.open_way_to_live(&["www", "api"]);
    // The monitoring user may enter neither certificate's directory.
    for name in ["www", "api"] {
        let d = dir.join(&format!("live/{name}"));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let run = check_as_nobody(&dir, false);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout.starts_with(
            "CERTKEEPER UNKNOWN - 2 certificates: 0 critical, 0 warning, 0 ok, 2 not checked\n"
        ),
        "{run:?}"
    );
    let run = check_as_nobody(&dir, true);
    assert_eq!(run.code, 3, "{run:?}");
    let entries: Value = serde_json::from_str(&run.stdout).unwrap();
    for e in entries.as_array().unwrap() {
        assert_eq!(e["status"], "unknown", "{e:#}");
        assert!(strings(&e["problems"]).is_empty(), "{e:#}");
        assert!(
            strings(&e["not_checked"])
                .iter()
                .any(|n| n.starts_with("fullchain not checked: ")),
            "{e:#}"
        );
    }

    // One readable certificate: the status is that of what was checked.
    let d = dir.join("live/api");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = check_as_nobody(&dir, true);
    assert_eq!(run.code, 0, "{run:?}");
    let entries: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(entries[0]["status"], "unknown", "{run:?}");
    assert_eq!(entries[1]["status"], "ok", "{run:?}");

    // A certificate that is broken in what could be read is still critical.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    let www = dir.join("live/www");
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(dir.join("live/www/privkey.pem")).unwrap();
    let run = check_as_nobody(&dir, true);
    assert_eq!(run.code, 2, "{run:?}");
}
