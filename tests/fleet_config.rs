//! The fleet's config section, `fleet keygen` and the seal key checks of `config check`,
//! through the real binary: one clear line with file, line and key for each problem, the
//! documented exit code, nothing written on a refusal, and the key never printed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use base64::Engine;

use crate::util::{Dir, Run};

const BASE: &str = "\
state_dir: state
issuers:
  internal:
    type: local-ca
fleet:
  name: web-pool
  host: web1
  etcd:
    endpoints: [\"https://127.0.0.1:2379\"]
  seal_key_file: fleet.key
certificates:
  - name: www
    domains: [example.test]
    issuer: internal
    fleet: true
    fullchain: live/fullchain.pem
    privkey: live/privkey.pem
";

/// Every entry of `dir`, recursively, with its size: what a refused command must leave as
/// it found it.
fn listing(dir: &Path) -> Vec<(String, u64, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        out.push((
            e.file_name().to_string_lossy().into_owned(),
            m.len(),
            m.mode(),
        ));
        if m.is_dir() {
            out.extend(listing(&e.path()));
        }
    }
    out.sort();
    out
}

/// The forms a key could be printed in.
fn forms(key: &[u8]) -> Vec<String> {
    vec![
        hex::encode(key),
        hex::encode_upper(key),
        base64::engine::general_purpose::STANDARD.encode(key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        String::from_utf8_lossy(key).into_owned(),
    ]
}

fn assert_key_not_shown(run: &Run, key: &[u8]) {
    assert!(!key.is_empty(), "an empty key has no form to look for");
    for form in forms(key) {
        assert!(
            !run.stdout.contains(&form) && !run.stderr.contains(&form),
            "the key is printed: {run:?}"
        );
    }
}

/// One line on stderr, `certkeeper: `, nothing on stdout.
fn one_line(run: &Run) -> &str {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(lines[0].starts_with("certkeeper: "), "{run:?}");
    lines[0]
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn keygen_writes_32_bytes_mode_0600_and_never_prints_them() {
    let dir = Dir::new();
    dir.config(BASE);
    // To the config's seal_key_file (relative to the config), then to --out.
    let run = dir.run(&["fleet", "keygen"]);
    assert_eq!(run.code, 0, "{run:?}");
    let key = std::fs::read(dir.join("fleet.key")).unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(mode(&dir.join("fleet.key")), 0o600);
    assert!(
        run.stdout
            .contains(&dir.join("fleet.key").display().to_string()),
        "{run:?}"
    );
    assert!(run.stdout.contains("every host"), "{run:?}");
    assert_key_not_shown(&run, &key);
    // A key not all one byte: random.
    assert!(key.iter().any(|b| *b != key[0]));

    let out = dir.join("other.key");
    let run = dir.run(&["fleet", "keygen", "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let other = std::fs::read(&out).unwrap();
    assert_eq!(other.len(), 32);
    assert_ne!(other, key);
    assert_eq!(mode(&out), 0o600);
    assert_key_not_shown(&run, &other);
    // The key the config names checks out.
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("fleet web-pool: host web1"), "{run:?}");
    assert!(run.stdout.contains("certificate www (fleet)"), "{run:?}");
    assert_key_not_shown(&run, &key);
    // Nothing but the keys: no temporary file left.
    let names: Vec<String> = listing(dir.path()).into_iter().map(|(n, ..)| n).collect();
    assert_eq!(names, ["config.yaml", "fleet.key", "other.key"]);
}

#[test]
fn keygen_without_out_needs_a_fleet_section() {
    let dir = Dir::new();
    dir.config(&BASE.replace("    fleet: true\n", "").replace(
        "fleet:\n  name: web-pool\n  host: web1\n  etcd:\n    endpoints: [\"https://127.0.0.1:2379\"]\n  seal_key_file: fleet.key\n",
        "",
    ));
    let before = listing(dir.path());
    let run = dir.run(&["fleet", "keygen"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(one_line(&run).contains("no fleet section"), "{run:?}");
    assert!(one_line(&run).contains("--out"), "{run:?}");
    assert_eq!(listing(dir.path()), before);
    // An invalid config is a config error too, and nothing is written.
    dir.config(
        &BASE
            .replace("canary: 1", "")
            .replace("host: web1", "host: web/1"),
    );
    let before = listing(dir.path());
    let run = dir.run(&["fleet", "keygen"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(listing(dir.path()), before);
    // Usage errors: an unknown flag, a path that names no file.
    let run = dir.run(&["fleet", "keygen", "--bogus"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = dir.run(&["fleet", "keygen", "--out", ""]);
    assert_eq!(run.code, 2, "{run:?}");
    for out in [".", "/"] {
        let run = dir.run(&["fleet", "keygen", "--out", out]);
        assert_eq!(run.code, 2, "--out {out:?}: {run:?}");
        assert!(one_line(&run).contains("is not a file path"), "{run:?}");
    }
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn keygen_refuses_what_is_not_a_file_and_reports_a_missing_directory() {
    let dir = Dir::new();
    dir.config(BASE);
    std::fs::create_dir(dir.join("adir")).unwrap();
    let before = listing(dir.path());
    for force in [false, true] {
        let mut args = vec!["fleet", "keygen", "--out"];
        let out = dir.join("adir");
        args.push(out.to_str().unwrap());
        if force {
            args.push("--force");
        }
        let run = dir.run(&args);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(one_line(&run).contains("a directory is there"), "{run:?}");
        assert_eq!(listing(dir.path()), before);
    }
    let out = dir.join("missing/fleet.key");
    let run = dir.run(&["fleet", "keygen", "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    let line = one_line(&run);
    assert!(
        line.contains(&format!("cannot write {}", out.display())),
        "{run:?}"
    );
    assert!(!line.contains("certkeeper-tmp"), "{run:?}");
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn keygen_refuses_to_overwrite_a_key() {
    let dir = Dir::new();
    dir.config(BASE);
    let key = dir.join("fleet.key");
    assert_eq!(dir.run(&["fleet", "keygen"]).code, 0);
    let first = std::fs::read(&key).unwrap();
    let before = listing(dir.path());
    for args in [
        vec!["fleet", "keygen"],
        vec!["fleet", "keygen", "--out", key.to_str().unwrap()],
    ] {
        let run = dir.run(&args);
        assert_eq!(run.code, 1, "{run:?}");
        let line = one_line(&run);
        assert!(line.contains("already exists"), "{run:?}");
        assert!(line.contains("--force"), "{run:?}");
        assert_eq!(run.stdout, "");
        assert_key_not_shown(&run, &first);
        assert_eq!(std::fs::read(&key).unwrap(), first);
        assert_eq!(listing(dir.path()), before);
    }
}

#[test]
fn keygen_refuses_a_symlink_at_the_target_even_with_force() {
    let dir = Dir::new();
    dir.config(BASE);
    // A link to nowhere (writing through it would create its target) and a link to a file.
    let victim = dir.write("victim", "precious\n");
    std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join("fleet.key")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("linked.key")).unwrap();
    let before = listing(dir.path());
    for (target, force) in [
        ("fleet.key", false),
        ("fleet.key", true),
        ("linked.key", false),
        ("linked.key", true),
    ] {
        let out = dir.join(target);
        let mut args = vec!["fleet", "keygen", "--out", out.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let run = dir.run(&args);
        assert_eq!(run.code, 1, "{target} force={force}: {run:?}");
        assert!(one_line(&run).contains("symbolic link"), "{run:?}");
        assert_eq!(listing(dir.path()), before, "{target} force={force}");
        assert!(!dir.join("elsewhere").exists());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }
    // The default target (the config's seal_key_file) is refused the same way.
    let run = dir.run(&["fleet", "keygen", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn keygen_force_replaces_the_key_atomically() {
    let dir = Dir::new();
    dir.config(BASE);
    let key = dir.join("fleet.key");
    assert_eq!(dir.run(&["fleet", "keygen"]).code, 0);
    let first = std::fs::read(&key).unwrap();
    // A second name for the old file: a replacement by rename leaves it whole, a write in
    // place would change it.
    std::fs::hard_link(&key, dir.join("old.key")).unwrap();
    // A key loosened by hand gets 0600 back.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = dir.run(&["fleet", "keygen", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let second = std::fs::read(&key).unwrap();
    assert_eq!(second.len(), 32);
    assert_ne!(second, first);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::read(dir.join("old.key")).unwrap(), first);
    assert_key_not_shown(&run, &second);
    assert_key_not_shown(&run, &first);
    let names: Vec<String> = listing(dir.path()).into_iter().map(|(n, ..)| n).collect();
    assert_eq!(names, ["config.yaml", "fleet.key", "old.key"]);
}

/// (what is wrong, the text replaced in BASE, its replacement, the key path named, the line
/// it is on, a fragment of the message)
const INVALID: &[(&str, &str, &str, &str, usize, &str)] = &[
    (
        "fleet: true without a fleet section",
        "fleet:\n  name: web-pool\n  host: web1\n  etcd:\n    endpoints: [\"https://127.0.0.1:2379\"]\n  seal_key_file: fleet.key\n",
        "",
        "certificates[0].fleet",
        9,
        "needs a top-level `fleet:` section",
    ),
    (
        "a name with a slash",
        "name: web-pool",
        "name: web/pool",
        "fleet.name",
        6,
        "not usable in etcd keys",
    ),
    (
        "a name that is ..",
        "name: web-pool",
        "name: \"..\"",
        "fleet.name",
        6,
        "not usable in etcd keys",
    ),
    (
        "a name too long",
        "name: web-pool",
        "name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "fleet.name",
        6,
        "1 to 64",
    ),
    (
        "a host with a space",
        "host: web1",
        "host: \"web 1\"",
        "fleet.host",
        7,
        "not usable in etcd keys",
    ),
    (
        "an empty host",
        "host: web1",
        "host: \"\"",
        "fleet.host",
        7,
        "not usable in etcd keys",
    ),
    (
        "cert_file without key_file",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n    cert_file: etcd-client.pem\n",
        "fleet.etcd.cert_file",
        10,
        "needs key_file",
    ),
    (
        "key_file without cert_file",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n    key_file: etcd-client.key\n",
        "fleet.etcd.key_file",
        10,
        "needs cert_file",
    ),
    (
        "an endpoint without a scheme",
        "endpoints: [\"https://127.0.0.1:2379\"]",
        "endpoints:\n      - https://127.0.0.1:2379\n      - 10.0.0.2:2379",
        "fleet.etcd.endpoints[1]",
        11,
        "is not an etcd endpoint",
    ),
    (
        "an endpoint without a port",
        "endpoints: [\"https://127.0.0.1:2379\"]",
        "endpoints:\n      - https://etcd.example.test",
        "fleet.etcd.endpoints[0]",
        10,
        "has no port",
    ),
    (
        "an endpoint with a path",
        "endpoints: [\"https://127.0.0.1:2379\"]",
        "endpoints:\n      - https://127.0.0.1:2379/v3",
        "fleet.etcd.endpoints[0]",
        10,
        "is not an etcd endpoint",
    ),
    (
        "an endpoint of another scheme",
        "endpoints: [\"https://127.0.0.1:2379\"]",
        "endpoints:\n      - unix://127.0.0.1:2379",
        "fleet.etcd.endpoints[0]",
        10,
        "is not an etcd endpoint",
    ),
    (
        "no endpoints",
        "endpoints: [\"https://127.0.0.1:2379\"]",
        "endpoints: []",
        "fleet.etcd.endpoints",
        9,
        "endpoints is empty",
    ),
    (
        "lease_ttl too short",
        "  seal_key_file: fleet.key\n",
        "  seal_key_file: fleet.key\n  lease_ttl: 2s\n",
        "fleet.lease_ttl",
        11,
        "lease_ttl 2s is out of range; give 5s to 5m",
    ),
    (
        "lease_ttl too long",
        "  seal_key_file: fleet.key\n",
        "  seal_key_file: fleet.key\n  lease_ttl: 1h\n",
        "fleet.lease_ttl",
        11,
        "lease_ttl 1h is out of range",
    ),
    (
        "lease_ttl without a unit",
        "  seal_key_file: fleet.key\n",
        "  seal_key_file: fleet.key\n  lease_ttl: 15\n",
        "fleet.lease_ttl",
        11,
        "a duration needs a unit",
    ),
    (
        "canary 0",
        "  seal_key_file: fleet.key\n",
        "  seal_key_file: fleet.key\n  canary: 0\n",
        "fleet.canary",
        11,
        "canary 0 is out of range",
    ),
    (
        "max_failures negative",
        "  seal_key_file: fleet.key\n",
        "  seal_key_file: fleet.key\n  max_failures: -1\n",
        "fleet.max_failures",
        11,
        "invalid value",
    ),
    (
        "a password inline",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n    username: certkeeper\n    password: hunter2-etcd\n",
        "fleet.etcd.password",
        11,
        "secrets are not accepted inline",
    ),
    (
        "a username without a password",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n    username: certkeeper\n",
        "fleet.etcd.username",
        10,
        "needs a password",
    ),
    (
        "no seal_key_file",
        "  seal_key_file: fleet.key\n",
        "",
        "fleet.seal_key_file",
        5,
        "seal_key_file is missing",
    ),
    (
        "an unknown key",
        "  seal_key_file: fleet.key\n",
        "  seal_key_file: fleet.key\n  canaries: 2\n",
        "fleet.canaries",
        11,
        "unknown key `canaries`",
    ),
];

#[test]
fn fleet_config_errors_name_file_line_and_key() {
    for (what, from, to, key, line, fragment) in INVALID {
        let dir = Dir::new();
        assert!(BASE.contains(from), "{what}");
        let config = dir.config(&BASE.replacen(from, to, 1));
        let before = listing(dir.path());
        for args in [
            &["config", "check"][..],
            &["config", "check", "--no-environment"],
        ] {
            let run = dir.run(args);
            assert_eq!(run.code, 2, "{what}: {run:?}");
            let expected = format!("certkeeper: {}:{line}: {key}: ", config.display());
            let got = one_line(&run);
            assert!(
                got.starts_with(&expected),
                "{what}: want {expected}\n{run:?}"
            );
            assert!(got.contains(fragment), "{what}: want {fragment}\n{run:?}");
            assert!(!run.stderr.contains("panicked"), "{what}: {run:?}");
            assert!(!run.stderr.contains("hunter2"), "{what}: {run:?}");
            assert_eq!(run.stdout, "", "{what}");
        }
        // `check` refuses it as UNKNOWN, with the same line.
        let run = dir.run(&["check"]);
        assert_eq!(run.code, 3, "{what}: {run:?}");
        assert_eq!(listing(dir.path()), before, "{what}: something was written");
    }
}

#[test]
fn the_default_host_is_this_hosts_name() {
    let dir = Dir::new();
    dir.config(&BASE.replace("  host: web1\n", ""));
    let key = dir.write("fleet.key", [9u8; 32]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 0, "{run:?}");
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    assert!(
        run.stdout
            .contains(&format!("fleet web-pool: host {hostname},")),
        "{run:?}"
    );
}

#[test]
fn config_check_refuses_a_seal_key_of_the_wrong_size_or_mode() {
    // (what, bytes, mode, a fragment of the message)
    let cases: &[(&str, Vec<u8>, u32, &str)] = &[
        ("31 bytes", vec![0xA5; 31], 0o600, "holds 31 bytes"),
        (
            "32 bytes and a newline",
            [vec![0x5A; 32], b"\n".to_vec()].concat(),
            0o600,
            "holds 33 bytes",
        ),
        (
            "a key written as hex",
            hex::encode([0x3C; 32]).into_bytes(),
            0o600,
            "holds 64 bytes",
        ),
        ("mode 0644", vec![0xC3; 32], 0o644, "(mode 0644)"),
        ("mode 0640", vec![0xC3; 32], 0o640, "(mode 0640)"),
        ("mode 0604", vec![0xC3; 32], 0o604, "(mode 0604)"),
        ("empty", Vec::new(), 0o600, "holds 0 bytes"),
    ];
    for (what, bytes, file_mode, fragment) in cases {
        let dir = Dir::new();
        let config = dir.config(BASE);
        let key = dir.write("fleet.key", bytes);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(*file_mode)).unwrap();
        let before = listing(dir.path());
        let run = dir.run(&["config", "check"]);
        assert_eq!(run.code, 2, "{what}: {run:?}");
        let expected = format!("certkeeper: {}:10: fleet.seal_key_file: ", config.display());
        let got = one_line(&run);
        assert!(got.starts_with(&expected), "{what}: {run:?}");
        assert!(got.contains(fragment), "{what}: want {fragment}: {run:?}");
        if !bytes.is_empty() {
            assert_key_not_shown(&run, bytes);
            assert_key_not_shown(&run, &bytes[..bytes.len().min(32)]);
        }
        assert_eq!(listing(dir.path()), before, "{what}");
        // Without the environment checks the file is not looked at.
        let run = dir.run(&["config", "check", "--no-environment"]);
        assert_eq!(run.code, 0, "{what}: {run:?}");
    }
    // Missing, or a directory.
    let dir = Dir::new();
    dir.config(BASE);
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        one_line(&run).contains("cannot read seal key file"),
        "{run:?}"
    );
    std::fs::create_dir(dir.join("fleet.key")).unwrap();
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        one_line(&run).contains("is a directory, not a regular file"),
        "{run:?}"
    );
}

#[test]
fn config_check_reads_etcds_tls_files_and_password() {
    let dir = Dir::new();
    let config = dir.config(&BASE.replace(
        "    endpoints: [\"https://127.0.0.1:2379\"]\n",
        "    endpoints: [\"https://127.0.0.1:2379\"]\n    ca_file: etcd-ca.pem\n    cert_file: etcd-client.pem\n    key_file: etcd-client.key\n    username: certkeeper\n    password_env: CERTKEEPER_TEST_ETCD_PASSWORD_SURELY_UNSET\n",
    ));
    let key = dir.write("fleet.key", [9u8; 32]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    let c = config.display();
    assert_eq!(lines.len(), 4, "{run:?}");
    assert!(lines[0].starts_with(&format!(
        "certkeeper: {c}:10: fleet.etcd.ca_file: cannot read"
    )));
    assert!(lines[1].starts_with(&format!(
        "certkeeper: {c}:11: fleet.etcd.cert_file: cannot read"
    )));
    assert!(lines[2].starts_with(&format!(
        "certkeeper: {c}:12: fleet.etcd.key_file: cannot read"
    )));
    assert!(lines[3].starts_with(&format!(
        "certkeeper: {c}:14: fleet.etcd.password: environment variable CERTKEEPER_TEST_ETCD_PASSWORD_SURELY_UNSET is not set"
    )));
    // All there: valid, and the password is never shown.
    dir.write("etcd-ca.pem", "ca\n");
    dir.write("etcd-client.pem", "cert\n");
    let client_key = dir.write("etcd-client.key", "key\n");
    std::fs::set_permissions(&client_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = crate::util::Run::from(
        std::process::Command::new(crate::util::bin())
            .arg("--config")
            .arg(&config)
            .args(["config", "check"])
            .env("CERTKEEPER_TEST_ETCD_PASSWORD_SURELY_UNSET", "hunter2-etcd")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "user certkeeper (password from env CERTKEEPER_TEST_ETCD_PASSWORD_SURELY_UNSET)"
        ),
        "{run:?}"
    );
    assert!(!run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"));
}
