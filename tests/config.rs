//! Config validation through the real binary: each invalid config gives one line naming the
//! file, line and key, exit 2 from `config check` (3 from `check`), and never a panic or a
//! secret in the output.

use std::process::Command;

use certkeeper::config::Config;

use crate::util::{Dir, Run, bin};

const BASE: &str = "\
state_dir: state
issuers:
  le:
    type: acme
    directory: https://127.0.0.1:14000/dir
  internal:
    type: local-ca
dns_providers:
  cf:
    type: cloudflare
    api_token_env: CF_TOKEN
certificates:
  - name: www
    domains: [example.test]
    issuer: le
    dns_provider: cf
    fullchain: live/fullchain.pem
    privkey: live/privkey.pem
";

/// (what is wrong, the config, the key path the error must name, a fragment of the message)
const INVALID: &[(&str, &str, &str, &str)] = &[
    (
        "unknown top-level key",
        "certificate: []\n",
        "certificate",
        "unknown key `certificate`",
    ),
    (
        "unknown nested key",
        "@www\n    domain: [x.test]\n",
        "certificates[0].domain",
        "unknown key `domain`",
    ),
    (
        "bad duration",
        "renewal:\n  jitter: 30x\n",
        "renewal.jitter",
        "\"30x\" is not a duration",
    ),
    (
        "duration without unit",
        "dns:\n  propagation_timeout: 120\n",
        "dns.propagation_timeout",
        "a duration needs a unit",
    ),
    (
        "cron with 5 fields",
        "renewal:\n  schedule: \"0 3 * * *\"\n",
        "renewal.schedule",
        "has 5 fields",
    ),
    (
        "cron garbage",
        "renewal:\n  schedule: \"every day at noon ok\"\n",
        "renewal.schedule",
        "not a cron expression",
    ),
    (
        "cron out of range",
        "renewal:\n  schedule: \"0 61 * * * *\"\n",
        "renewal.schedule",
        "not a valid cron expression",
    ),
    (
        "unknown provider reference",
        "s/dns_provider: cf/dns_provider: cf2/",
        "certificates[0].dns_provider",
        "unknown dns provider \"cf2\"",
    ),
    (
        "unknown issuer reference",
        "s/issuer: le/issuer: zerossl/",
        "certificates[0].issuer",
        "unknown issuer \"zerossl\"",
    ),
    (
        "unknown issuer in a list",
        "s/issuer: le/issuer: [le, zerossl]/",
        "certificates[0].issuer[1]",
        "unknown issuer \"zerossl\"",
    ),
    (
        "inline secret",
        "s/api_token_env: CF_TOKEN/api_token: s3cr3t-t0ken-value/",
        "dns_providers.cf.api_token",
        "secrets are not accepted inline",
    ),
    (
        "missing required key",
        "s/    privkey: live\\/privkey.pem\n//",
        "certificates[0].privkey",
        "privkey is missing",
    ),
    (
        "duplicate certificate names",
        "@  - name: www\n    domains: [b.test]\n    issuer: internal\n    fullchain: b/f.pem\n    privkey: b/k.pem\n",
        "certificates[1].name",
        "already used by certificates[0]",
    ),
    (
        "bad certificate name",
        "s/name: www/name: WWW/",
        "certificates[0].name",
        "not a valid name",
    ),
    (
        "empty domains",
        "s/domains: \\[example.test\\]/domains: []/",
        "certificates[0].domains",
        "domains is empty",
    ),
    (
        "bad domain",
        "s/domains: \\[example.test\\]/domains: [\"exa mple.test\"]/",
        "certificates[0].domains[0]",
        "not a valid domain name",
    ),
    (
        "wildcard not leftmost",
        "s/domains: \\[example.test\\]/domains: [\"a.*.example.test\"]/",
        "certificates[0].domains[0]",
        "wildcard may only be the whole first label",
    ),
    (
        "IP as domain",
        "s/domains: \\[example.test\\]/domains: [\"127.0.0.1\"]/",
        "certificates[0].domains[0]",
        "is an IP address",
    ),
    (
        "unknown key type",
        "@www\n    key: rsa-1024\n",
        "certificates[0].key",
        "unknown key type \"rsa-1024\"",
    ),
    (
        "world-readable key mode",
        "@www\n    mode: \"0644\"\n",
        "certificates[0].mode",
        "lets every user",
    ),
    (
        "unquoted mode",
        "@www\n    mode: 600\n",
        "certificates[0].mode",
        "quoted octal string",
    ),
    (
        "acme without dns provider",
        "s/    dns_provider: cf\n//",
        "certificates[0].dns_provider",
        "dns_provider is missing",
    ),
    (
        "unknown challenge",
        "@www\n    challenge: dns-persist\n",
        "certificates[0].challenge",
        "unknown challenge \"dns-persist\"; use dns-01 or dns-persist-01",
    ),
    (
        "dns-01 written out, without dns provider",
        "s/    dns_provider: cf\n/    challenge: dns-01\n/",
        "certificates[0].dns_provider",
        "dns_provider is missing",
    ),
    (
        "unknown issuer type",
        "s/type: local-ca/type: letsencrypt/",
        "issuers.internal.type",
        "unknown type \"letsencrypt\"",
    ),
    (
        "a dns provider type this build does not have",
        "s/    type: cloudflare/    type: route53/",
        "dns_providers.cf.type",
        "unknown type \"route53\"; use one of: cloudflare, aliyun, exec",
    ),
    (
        "missing type",
        "s/    type: local-ca\n/    validity: 30d\n/",
        "issuers.internal",
        "`type` is missing",
    ),
    (
        "env and file both",
        "s/api_token_env: CF_TOKEN/api_token_env: CF_TOKEN\n    api_token_file: cf.token/",
        "dns_providers.cf.api_token_env",
        "not both",
    ),
    (
        "secret value in an _env key",
        "s/api_token_env: CF_TOKEN/api_token_env: \"abc:def\\/ghi\"/",
        "dns_providers.cf.api_token_env",
        "NAME of an environment variable",
    ),
    (
        "concurrency zero",
        "renewal:\n  concurrency: 0\n",
        "renewal.concurrency",
        "out of range",
    ),
    (
        "fraction above one",
        "renewal:\n  before_expiry: 2/1\n",
        "renewal.before_expiry",
        "not a fraction of the lifetime",
    ),
    (
        "bad resolver",
        "dns:\n  resolvers: [\"ns1\"]\n",
        "dns.resolvers[0]",
        "not IP or IP:PORT",
    ),
    (
        "unknown alert event",
        "alerts:\n  - type: webhook\n    url: https://hooks.test/x\n    on: [renewd]\n",
        "alerts[0].on[0]",
        "unknown event \"renewd\"",
    ),
    (
        "probe interval below the minimum",
        "probe_interval: 0s\n",
        "probe_interval",
        "interval 0s is too short; give at least 1s",
    ),
    (
        "probe drift_after without unit",
        "drift_after: 15\n",
        "drift_after",
        "a duration needs a unit",
    ),
    (
        "probe settings as a section",
        "probe:\n  interval: 5m\n",
        "probe",
        "unknown key `probe`, expected one of",
    ),
    (
        "keep_snapshots zero",
        "@www\n    keep_snapshots: 0\n",
        "certificates[0].keep_snapshots",
        "out of range",
    ),
    (
        "retry initial above max",
        "renewal:\n  retry: { initial: 2d, max: 1d }\n",
        "renewal.retry",
        "not longer than retry.max",
    ),
    (
        "directory not http",
        "s/https:\\/\\/127.0.0.1:14000\\/dir/ftp:\\/\\/ca.test\\/dir/",
        "issuers.le.directory",
        "not an http(s) URL",
    ),
    (
        "same file for two certificates",
        "@  - name: two\n    domains: [b.test]\n    issuer: internal\n    fullchain: live/fullchain.pem\n    privkey: b/k.pem\n",
        "certificates[1].fullchain",
        "also certificates[0].fullchain",
    ),
    (
        "slack url inline",
        "alerts:\n  - type: slack\n    webhook_url: https://hooks.slack.test/T000/B000/XXXX\n",
        "alerts[0].webhook_url",
        "secrets are not accepted inline",
    ),
    (
        "cloudflare zone_id not an id",
        "s/    api_token_env: CF_TOKEN\n/    api_token_env: CF_TOKEN\n    zone_id: \"example.com\"\n/",
        "dns_providers.cf.zone_id",
        "zone_id is the 32-character hex id",
    ),
    (
        "cloudflare unknown key",
        "s/    api_token_env: CF_TOKEN\n/    api_token_env: CF_TOKEN\n    zone: abc\n/",
        "dns_providers.cf.zone",
        "unknown key",
    ),
    (
        "cloudflare api_base not a URL",
        "s/    api_token_env: CF_TOKEN\n/    api_token_env: CF_TOKEN\n    api_base: api.cloudflare.test\n/",
        "dns_providers.cf.api_base",
        "not an http(s) URL",
    ),
    (
        "cloudflare token missing",
        "s/    api_token_env: CF_TOKEN\n//",
        "dns_providers.cf",
        "api_token is missing",
    ),
    (
        "aliyun secret missing",
        "s/dns_providers:\n/dns_providers:\n  ali:\n    type: aliyun\n    access_key_id_env: AK\n/",
        "dns_providers.ali",
        "access_key_secret is missing",
    ),
    (
        "dingtalk url inline",
        "alerts:\n  - type: dingtalk\n    webhook_url: https://oapi.dingtalk.test/robot/send?access_token=abc\n",
        "alerts[0].webhook_url",
        "secrets are not accepted inline",
    ),
    (
        "wecom with a signing secret",
        "alerts:\n  - type: wecom\n    webhook_url_env: W\n    secret_env: S\n",
        "alerts[0].secret_env",
        "a WeCom group robot has no signing secret",
    ),
    (
        "feishu without url",
        "alerts:\n  - type: feishu\n    secret_env: S\n",
        "alerts[0]",
        "webhook_url",
    ),
    (
        "unknown alert type",
        "alerts:\n  - type: teams\n    webhook_url_env: T\n",
        "alerts[0].type",
        "use one of: slack, webhook, wecom, dingtalk, feishu",
    ),
    (
        "two alert channels with one name",
        "alerts:\n  - type: slack\n    name: ops\n    webhook_url_env: A\n  - type: feishu\n    name: ops\n    webhook_url_env: B\n",
        "alerts[1].name",
        "already used by alerts[0]",
    ),
    (
        "alert_repeat without unit",
        "alert_repeat: 24\n",
        "alert_repeat",
        "a duration needs a unit",
    ),
    (
        "contact not mailto",
        "s/    type: acme\n/    type: acme\n    contact: [ops@example.test]\n/",
        "issuers.le.contact[0]",
        "not a mailto: URL",
    ),
    (
        "verify without port",
        "@www\n    verify: { tls_connect: 127.0.0.1 }\n",
        "certificates[0].verify.tls_connect",
        "not HOST:PORT",
    ),
    (
        "verify with nothing to check",
        "@www\n    verify: { timeout: 5s }\n",
        "certificates[0].verify",
        "verify needs tls_connect",
    ),
    (
        "verify command empty",
        "@www\n    verify: { command: [] }\n",
        "certificates[0].verify.command",
        "command is empty",
    ),
    (
        "reload command empty",
        "@www\n    reload: { command: [] }\n",
        "certificates[0].reload.command",
        "command is empty",
    ),
    (
        "wrong type for a list",
        "@www\n    reuse_key: maybe\n",
        "certificates[0].reuse_key",
        "invalid type",
    ),
];

/// Applies an edit to BASE: `s/old/new/` (regex-free: `\/`, `\[`, `\]` unescaped),
/// `@www\n...` appends lines to the certificate, anything else is appended at top level.
fn edit(change: &str) -> String {
    if let Some(body) = change.strip_prefix("s/") {
        let body = body.strip_suffix('/').expect("s/old/new/");
        let parts: Vec<String> = split_unescaped(body);
        assert_eq!(parts.len(), 2, "{change}");
        assert!(BASE.contains(&parts[0]), "BASE lacks {:?}", parts[0]);
        return BASE.replacen(&parts[0], &parts[1], 1);
    }
    if let Some(lines) = change.strip_prefix("@www\n") {
        return format!("{BASE}{lines}");
    }
    if let Some(rest) = change.strip_prefix('@') {
        return format!("{BASE}{rest}");
    }
    if change.starts_with("certificate:") {
        return format!("{BASE}{change}");
    }
    format!("{BASE}{change}")
}

fn split_unescaped(body: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => parts.last_mut().unwrap().push(chars.next().unwrap()),
            '/' => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

#[test]
fn base_config_is_valid() {
    let dir = Dir::new();
    dir.config(BASE);
    let run = dir.run(&["config", "check", "--no-environment"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("certificate www: example.test via le (dns cf), key ecdsa-p256"),
        "{run:?}"
    );
}

/// dns-persist-01 orders publish nothing: such a certificate needs no dns_provider.
#[test]
fn dns_persist_01_needs_no_dns_provider() {
    let dir = Dir::new();
    dir.config(&BASE.replace("    dns_provider: cf\n", "    challenge: dns-persist-01\n"));
    let run = dir.run(&["config", "check", "--no-environment"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("certificate www: example.test via le (dns-persist-01), key ecdsa-p256"),
        "{run:?}"
    );
    let config = Config::load(&dir.join("config.yaml")).unwrap();
    assert_eq!(
        config.certificates[0].challenge,
        certkeeper::config::Challenge::DnsPersist01
    );
    assert_eq!(config.certificates[0].dns_provider, None);
}

#[test]
fn invalid_configs_give_one_line_naming_the_key() {
    assert!(INVALID.len() >= 20);
    let mut failures = Vec::new();
    for (what, change, key, fragment) in INVALID {
        let dir = Dir::new();
        let yaml = edit(change);
        let path = dir.config(&yaml);
        let run = dir.run(&["config", "check", "--no-environment"]);
        let prefix = format!("certkeeper: {}:", path.display());
        let lines: Vec<&str> = run.stderr.lines().collect();
        let ok = run.code == 2
            && run.stdout.is_empty()
            && lines.len() == 1
            && lines[0].starts_with(&prefix)
            && lines[0].contains(&format!(": {key}: "))
            && lines[0].contains(fragment)
            // the line number points at the key or its nearest written ancestor
            && lines[0][prefix.len()..].split(':').next().is_some_and(|l| l.parse::<usize>().is_ok());
        if !ok {
            failures.push(format!("{what}:\n{yaml}\n{run:?}"));
        }
        // `check` reports the same config error as UNKNOWN.
        let run = dir.run(&["check"]);
        if run.code != 3 || !run.stderr.contains(key) {
            failures.push(format!("{what} (check):\n{run:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn line_numbers_point_at_the_key() {
    let dir = Dir::new();
    dir.config(&BASE.replace("dns_provider: cf", "dns_provider: nope"));
    let run = dir.run(&["config", "check", "--no-environment"]);
    let line = BASE
        .lines()
        .position(|l| l.contains("dns_provider: cf"))
        .unwrap()
        + 1;
    assert!(
        run.stderr.contains(&format!(
            "config.yaml:{line}: certificates[0].dns_provider: "
        )),
        "{run:?}"
    );
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let dir = Dir::new();
    dir.config("certificates:\n  - name: www\n    domains: [a.test\n");
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.contains("config.yaml:4: not valid YAML")
            || run.stderr.contains("config.yaml:3: not valid YAML"),
        "{run:?}"
    );
}

#[test]
fn empty_and_missing_config() {
    let dir = Dir::new();
    dir.config("");
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("the config is empty"), "{run:?}");
    let run = Run::from(
        Command::new(bin())
            .args(["--config", "/nonexistent/c.yaml", "config", "check"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("/nonexistent/c.yaml: config file not found"),
        "{run:?}"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = Dir::new();
    let yaml = BASE
        .replace("dns_provider: cf", "dns_provider: cf2")
        .replace("issuer: le", "issuer: [le, nope]")
        + "renewal:\n  jitter: soon\n  schedule: \"* * * * *\"\n";
    dir.config(&yaml);
    let run = dir.run(&["config", "check", "--no-environment"]);
    assert_eq!(run.code, 2, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{run:?}");
    for key in [
        "certificates[0].dns_provider",
        "certificates[0].issuer[1]",
        "renewal.jitter",
        "renewal.schedule",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(key)),
            "{key} not reported: {run:?}"
        );
    }
}

#[test]
fn environment_problems_name_the_key_and_never_the_secret() {
    let dir = Dir::new();
    dir.write("live/.keep", "");
    dir.config(&BASE.replace("api_token_env: CF_TOKEN", "api_token_file: cf.token"));
    // Missing secret file.
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("dns_providers.cf.api_token: cannot read secret file"),
        "{run:?}"
    );
    // Present: valid, and the value appears nowhere.
    dir.write("cf.token", "tok-SHOULD-NOT-LEAK-1234\n");
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("SHOULD-NOT-LEAK") && !run.stderr.contains("SHOULD-NOT-LEAK"));
    assert!(run.stdout.contains("token from file"), "{run:?}");

    // Unset environment variable.
    dir.config(BASE);
    let run = Run::from(
        Command::new(bin())
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .args(["config", "check"])
            .env_remove("CF_TOKEN")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        format!(
            "certkeeper: {}:{}: dns_providers.cf.api_token: environment variable CF_TOKEN is not set",
            dir.join("config.yaml").display(),
            BASE.lines()
                .position(|l| l.contains("api_token_env"))
                .unwrap()
                + 1
        )
    );
    let run = Run::from(
        Command::new(bin())
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .args(["config", "check"])
            .env("CF_TOKEN", "env-SHOULD-NOT-LEAK")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!format!("{run:?}").contains("SHOULD-NOT-LEAK"));

    // Inline secret: refused without echoing it.
    dir.config(&BASE.replace(
        "api_token_env: CF_TOKEN",
        "api_token: inline-SHOULD-NOT-LEAK",
    ));
    let run = dir.run(&["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!format!("{run:?}").contains("SHOULD-NOT-LEAK"), "{run:?}");
}

#[test]
fn missing_trust_roots_file_is_reported() {
    let dir = Dir::new();
    dir.config(&BASE.replace(
        "    directory: https://127.0.0.1:14000/dir\n",
        "    directory: https://127.0.0.1:14000/dir\n    trust_roots: roots.pem\n",
    ));
    let run = Run::from(
        Command::new(bin())
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .args(["config", "check"])
            .env("CF_TOKEN", "x")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("issuers.le.trust_roots: cannot read"),
        "{run:?}"
    );
    assert!(run.stderr.contains("roots.pem"), "{run:?}");
}

#[test]
fn plain_http_to_a_remote_host_is_a_warning() {
    let dir = Dir::new();
    dir.config(&BASE.replace("https://127.0.0.1:14000/dir", "http://ca.example.test/dir"));
    let run = dir.run(&["config", "check", "--no-environment"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("issuers.le.directory: http://ca.example.test/dir is plain http"),
        "{run:?}"
    );
    dir.config(&BASE.replace("https://127.0.0.1:14000/dir", "http://127.0.0.1:14000/dir"));
    let run = dir.run(&["config", "check", "--no-environment"]);
    assert!(!run.stderr.contains("plain http"), "{run:?}");
}

#[test]
fn before_expiry_longer_than_validity_warns() {
    let dir = Dir::new();
    dir.config(
        &(BASE.replace(
            "    type: local-ca\n",
            "    type: local-ca\n    validity: 20d\n",
        )),
    );
    let run = dir.run(&["config", "check", "--no-environment"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(
            "renewal.before_expiry (30d) is not shorter than issuers.internal.validity (20d)"
        ),
        "{run:?}"
    );
}

#[test]
fn defaults_and_relative_paths() {
    let dir = Dir::new();
    let path = dir.config(BASE);
    let config = Config::load(&path).unwrap();
    let cert = &config.certificates[0];
    assert_eq!(cert.fullchain, dir.join("live/fullchain.pem"));
    assert_eq!(config.state_dir, dir.join("state"));
    assert_eq!(
        cert.mode, None,
        "unset: the live key's mode is kept, 0600 on a first deploy"
    );
    assert_eq!(cert.keep_snapshots, 5);
    assert_eq!(config.renewal.schedule, "0 17 */12 * * *");
    assert_eq!(config.renewal.concurrency, 4);
    assert_eq!(config.renewal.jitter.as_secs(), 1800);
    assert_eq!(config.dns.propagation_timeout.as_secs(), 120);
    assert_eq!(config.dns.poll_interval.as_secs(), 2);
    assert!(config.alerts.is_empty() && config.discover_paths.is_empty());
}

#[test]
fn shipped_configs_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for dir in ["examples", "deploy"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                if let Err(e) = Config::load(&path) {
                    panic!("{} is invalid:\n{e}", path.display());
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 5, "expected the example configs, found {seen}");
}

/// No input makes validation panic: truncations and byte mutations of a full config.
#[test]
fn no_panic_on_mangled_input() {
    let full = format!(
        "{BASE}dns:\n  resolvers: [\"127.0.0.1:8053\", \"::1\"]\nrenewal:\n  before_expiry: 1/3\n  schedule: \"0 0 3 * * *\"\n  retry: {{initial: 1m, max: 1h}}\nalerts:\n  - type: webhook\n    url: https://hooks.test/x\n    secret_env: HOOK_SECRET\n    on: [failed]\ndiscover:\n  paths: [/etc/ssl]\n"
    );
    let bytes = full.as_bytes();
    let path = std::path::Path::new("/nonexistent/config.yaml");
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for cut in 0..bytes.len() {
        let text = String::from_utf8_lossy(&bytes[..cut]);
        let _ = Config::from_yaml(&text, path);
    }
    const NOISE: &[u8] = b" :-[]{}\"'\n\t*&!|>%@#0123456789aZ/\\";
    for _ in 0..3000 {
        let mut m = bytes.to_vec();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % m.len();
            match next() % 3 {
                0 => m[at] = NOISE[(next() as usize) % NOISE.len()],
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, NOISE[(next() as usize) % NOISE.len()]),
            }
        }
        let text = String::from_utf8_lossy(&m);
        if let Err(e) = Config::from_yaml(&text, path) {
            for line in e.lines() {
                assert!(!line.contains('\n'));
            }
        }
    }
}

#[test]
fn verify_takes_a_health_command_with_or_without_a_tls_target() {
    let dir = Dir::new();
    let yaml = format!(
        "{BASE}    reload: {{ command: [nginx, -s, reload] }}\n    verify: {{ command: [/usr/local/bin/healthcheck, --quick], timeout: 20s }}\n"
    );
    let config = Config::load(&dir.config(&yaml)).unwrap();
    let cert = &config.certificates[0];
    let verify = cert.verify.as_ref().unwrap();
    assert_eq!(verify.tls_connect, None);
    assert_eq!(
        verify.command.as_deref(),
        Some(
            &[
                "/usr/local/bin/healthcheck".to_owned(),
                "--quick".to_owned()
            ][..]
        )
    );
    assert_eq!(verify.timeout.as_secs(), 20);
    assert_eq!(
        verify.server_name, "example.test",
        "defaults to the first domain"
    );
    assert_eq!(cert.reload.as_ref().unwrap().timeout.as_secs(), 30);

    let yaml = format!(
        "{BASE}    verify: {{ tls_connect: \"127.0.0.1:8443\", server_name: www.example.test }}\n"
    );
    let config = Config::load(&dir.config(&yaml)).unwrap();
    let verify = config.certificates[0].verify.as_ref().unwrap();
    assert_eq!(verify.tls_connect.as_deref(), Some("127.0.0.1:8443"));
    assert_eq!(verify.command, None);
    assert_eq!(verify.timeout.as_secs(), 10);
}

#[test]
fn config_check_shows_reload_groups_and_what_is_verified_without_arguments() {
    let dir = Dir::new();
    let cert = |name: &str, verify: &str| {
        format!(
            "  - name: {name}\n    domains: [{name}.test]\n    issuer: internal\n    \
             fullchain: live/{name}/f.pem\n    privkey: live/{name}/k.pem\n    \
             reload: {{ command: [/usr/sbin/nginx, -s, reload, --token=SECRET1] }}\n{verify}"
        )
    };
    let yaml = format!(
        "state_dir: state\nissuers:\n  internal:\n    type: local-ca\ncertificates:\n{}{}",
        cert(
            "a",
            "    verify: { tls_connect: \"127.0.0.1:443\", timeout: 5s }\n"
        ),
        cert(
            "b",
            "    verify: { command: [/usr/local/bin/check, --key=SECRET2] }\n"
        ),
    );
    dir.config(&yaml);
    let run = dir.run(&["config", "check", "--no-environment"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "  reload /usr/sbin/nginx (timeout 30s), once per pass for the 2 certificates that share it\n  verify a.test served at 127.0.0.1:443 (within 5s)\n"
        ),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("  verify health check /usr/local/bin/check (within 10s)\n"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("SECRET"), "{run:?}");
}

#[test]
fn alert_channels_are_named_and_default_to_the_failure_events() {
    let dir = Dir::new();
    let yaml = format!(
        "{BASE}alerts:\n  - type: slack\n    webhook_url_env: A\n  - type: slack\n    webhook_url_env: B\n    on: [renewed]\n  - type: dingtalk\n    name: ops\n    webhook_url_env: C\n    secret_env: D\nalert_repeat: 6h\n"
    );
    let config = Config::load(&dir.config(&yaml)).unwrap();
    let names: Vec<&str> = config.alerts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["slack", "slack-2", "ops"]);
    let on: Vec<&str> = config.alerts[0].on.iter().map(|e| e.as_str()).collect();
    assert_eq!(
        on,
        [
            "failed",
            "rolled_back",
            "rollback_failed",
            "expiring",
            "fleet_degraded",
            "fleet_generation_bad",
            "drift"
        ]
    );
    assert_eq!(config.alerts[1].on.len(), 1);
    assert_eq!(config.alert_repeat.as_secs(), 6 * 3600);
    assert_eq!(config.alerts[2].channel.kind(), "dingtalk");
}
