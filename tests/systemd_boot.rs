//! The units in `deploy/` started by a real systemd: a Debian 12 container (built once with
//! mmdebstrap and cached, see `util::nspawn`) boots under `systemd-nspawn`, gets the binary
//! and the units installed as the README's "Running it" says (a drop-in adds the
//! certificates' directory to `ReadWritePaths=`), and runs them beside Debian's nginx:
//!
//! 1. the oneshot (`certkeeper.service`) renews, its `systemctl reload nginx` runs from
//!    inside the sandbox, and nginx serves the new leaf; a process that a reload command
//!    leaves running is killed when the pass ends (why reloads go through `systemctl`);
//! 2. with nginx's config broken, the oneshot fails (unit "failed") and nginx still serves the
//!    old leaf, which is the one on disk;
//! 3. the notify daemon (`certkeeper-daemon.service`) becomes active; `systemctl reload`
//!    re-reads its config (same main PID, a certificate added there is issued), refuses a
//!    broken one and keeps running; `systemctl stop` ends it with exit status 0;
//! 4. the timer, enabled, has a next elapse time.
//!
//! The container has no network (`--private-network`) and uses the local CA. The test needs
//! root and the Debian packages `mmdebstrap` and `systemd-container`, and fails without them.
//! The first run builds the root file system (about two minutes); later runs boot the cached
//! one in about a second and take a few seconds in all.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::bin;
use crate::util::nspawn::{self, Container};

/// Where the container sees the binary and the repository's `deploy/`.
const BIN_IN: &str = "/mnt/certkeeper-bin/certkeeper";
const DEPLOY_IN: &str = "/mnt/certkeeper-deploy";

/// The certificate's name, served name and live files inside the container.
const SERVER_NAME: &str = "www.example.test";
const FULLCHAIN: &str = "/etc/tls/www/fullchain.pem";

/// How long nginx may take to serve what it was reloaded with.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The config of the first, manual step: a local CA and one certificate, no reload yet
/// (nginx cannot load a site whose files do not exist).
const FIRST: &str = "\
issuers:
  internal:
    type: local-ca
    validity: 90d
renewal:
  before_expiry: 30d
certificates:
  - name: www
    domains: [www.example.test]
    issuer: internal
    fullchain: /etc/tls/www/fullchain.pem
    privkey: /etc/tls/www/privkey.pem
";

/// What certkeeper does for `www` once nginx serves it.
const DEPLOY: &str = r#"    reload:
      command: ["systemctl", "reload", "nginx"]
    verify:
      tls_connect: 127.0.0.1:443
"#;

/// A second certificate, added to the daemon's config before `systemctl reload`.
const API: &str = "  - name: api
    domains: [api.example.test]
    issuer: internal
    fullchain: /etc/tls/api/fullchain.pem
    privkey: /etc/tls/api/privkey.pem
";

/// A certificate whose reload command leaves a process behind, as `haproxy -sf` or
/// `apachectl -k graceful` on a stopped Apache do: a new session (so that certkeeper's own
/// clean-up of the command's process group cannot reach it) that would live ten minutes.
const LEAVES_A_CHILD: &str = "  - name: child
    domains: [child.example.test]
    issuer: internal
    fullchain: /etc/tls/child/fullchain.pem
    privkey: /etc/tls/child/privkey.pem
    reload:
      command:
        - /bin/sh
        - -c
        - 'setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > /etc/tls/child.pid'
";

/// nginx's site for `www`, on the container's loopback.
const SITE: &str = "\
server {
    listen 127.0.0.1:443 ssl;
    server_name www.example.test;
    ssl_certificate /etc/tls/www/fullchain.pem;
    ssl_certificate_key /etc/tls/www/privkey.pem;
}
";

#[test]
fn units_run_under_a_real_systemd() {
    let rootfs = nspawn::rootfs();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let c = Container::boot(
        &rootfs,
        &[(Path::new(bin()), BIN_IN), (deploy.as_path(), DEPLOY_IN)],
    );
    install(&c);
    first_pair(&c);
    oneshot_renews_and_nginx_serves_the_new_leaf(&c);
    oneshot_ends_what_its_reload_command_left_running(&c);
    broken_nginx_fails_the_oneshot_and_keeps_the_old_leaf(&c);
    daemon_starts_reloads_and_stops(&c);
    timer_has_a_next_elapse(&c);
}

/// README, "Running it": the binary as /usr/local/bin/certkeeper, the three units in
/// /etc/systemd/system/, the certificates' directory in a drop-in of each service (what
/// `systemctl edit` writes), then `certkeeper config check`.
fn install(c: &Container) {
    let version = c.sh(&format!("{BIN_IN} --version"));
    assert_eq!(
        version.code, 0,
        "the built binary does not run on Debian 12 (its glibc, or a missing library):\n{version:?}"
    );
    c.must(&format!(
        "set -e
         install -m 0755 {BIN_IN} /usr/local/bin/certkeeper
         cp {DEPLOY_IN}/certkeeper.service {DEPLOY_IN}/certkeeper.timer \
            {DEPLOY_IN}/certkeeper-daemon.service /etc/systemd/system/
         for unit in certkeeper.service certkeeper-daemon.service; do
             mkdir -p /etc/systemd/system/$unit.d
             printf '[Service]\\nReadWritePaths=/etc/tls\\n' \
                 > /etc/systemd/system/$unit.d/override.conf
         done
         mkdir -p /etc/tls /etc/certkeeper
         systemctl daemon-reload"
    ));
    write_config(c, FIRST);
    c.must("certkeeper config check");
}

/// The first pair, through the oneshot, then nginx's site for it.
fn first_pair(c: &Container) {
    start(c, "certkeeper.service");
    let st = show(c, "certkeeper.service");
    assert_eq!(
        st["Result"],
        "success",
        "{st:?}\n{}",
        journal(c, "certkeeper.service")
    );
    c.must(&format!(
        "printf '%s' '{SITE}' > /etc/nginx/sites-enabled/www && systemctl reload nginx"
    ));
    wait_served(c, &on_disk(c));
}

fn oneshot_renews_and_nginx_serves_the_new_leaf(c: &Container) {
    write_config(c, &always_due());
    let old = on_disk(c);
    let run = start(c, "certkeeper.service");
    let st = show(c, "certkeeper.service");
    assert_eq!(
        (
            run.code,
            st["Result"].as_str(),
            st["ExecMainStatus"].as_str()
        ),
        (0, "success", "0"),
        "the oneshot did not succeed: {run:?}\n{st:?}\n{}",
        journal(c, "certkeeper.service")
    );
    let new = on_disk(c);
    assert_ne!(new, old, "the oneshot did not renew the leaf on disk");
    assert_eq!(
        served(c),
        new,
        "after the oneshot's `systemctl reload nginx`, nginx does not serve the leaf on disk"
    );
    c.must("journalctl -u certkeeper.service --no-pager | grep -q 'www: renewed'");
}

/// README, "Running it": a process a reload command starts lives in certkeeper's control
/// group, and systemd kills it when the oneshot's pass ends.
fn oneshot_ends_what_its_reload_command_left_running(c: &Container) {
    write_config(c, &format!("{}{LEAVES_A_CHILD}", always_due()));
    let run = start(c, "certkeeper.service");
    assert_eq!(run.code, 0, "{run:?}\n{}", journal(c, "certkeeper.service"));
    let pid = c.must("cat /etc/tls/child.pid");
    let pid = pid.trim();
    assert!(
        pid.parse::<u32>().is_ok(),
        "the reload command did not record its child: {pid:?}"
    );
    let alive = c.sh(&format!("kill -0 {pid}"));
    assert_ne!(
        alive.code, 0,
        "the process the reload command left (pid {pid}) outlived the oneshot"
    );
}

fn broken_nginx_fails_the_oneshot_and_keeps_the_old_leaf(c: &Container) {
    write_config(c, &always_due());
    let old = on_disk(c);
    assert_eq!(served(c), old);
    c.must("echo 'this_is_not_an_nginx_directive on;' > /etc/nginx/conf.d/broken.conf");
    let run = start(c, "certkeeper.service");
    let st = show(c, "certkeeper.service");
    assert_ne!(run.code, 0, "systemctl start succeeded with a broken nginx");
    assert_eq!(
        (
            st["ActiveState"].as_str(),
            st["Result"].as_str(),
            st["ExecMainStatus"].as_str()
        ),
        ("failed", "exit-code", "1"),
        "{st:?}\n{}",
        journal(c, "certkeeper.service")
    );
    assert_eq!(on_disk(c), old, "the old leaf is not back on disk");
    assert_eq!(served(c), old, "nginx does not serve the old leaf any more");
    assert_eq!(show(c, "nginx.service")["ActiveState"], "active");
    c.must(
        "rm /etc/nginx/conf.d/broken.conf && systemctl reload nginx \
         && systemctl reset-failed certkeeper.service",
    );
}

fn daemon_starts_reloads_and_stops(c: &Container) {
    // Not due: the daemon's first pass leaves www alone (it is also in its retry backoff).
    let config = format!("{FIRST}{DEPLOY}");
    write_config(c, &config);
    let unit = "certkeeper-daemon.service";
    // `enable --now` as the README says; enabled, the unit stays loaded after it stops, so
    // its exit status can be read.
    c.must(&format!("systemctl enable --now {unit}"));
    let st = show(c, unit);
    assert_eq!(
        (st["ActiveState"].as_str(), st["SubState"].as_str()),
        ("active", "running"),
        "{st:?}\n{}",
        journal(c, unit)
    );
    let pid = st["MainPID"].clone();
    assert_ne!(pid, "0");

    // A good new config: taken (same process), and its new certificate issued.
    write_config(c, &format!("{config}{API}"));
    let reload = c.sh(&format!("systemctl reload {unit}"));
    assert_eq!(reload.code, 0, "{reload:?}\n{}", journal(c, unit));
    wait_for(c, "test -s /etc/tls/api/fullchain.pem", || journal(c, unit));
    let st = show(c, unit);
    assert_eq!(
        (st["ActiveState"].as_str(), st["MainPID"].as_str()),
        ("active", pid.as_str()),
        "{st:?}"
    );
    c.must(&format!(
        "journalctl -u {unit} --no-pager | grep -q 'Config reloaded'"
    ));

    // A broken config: the reload fails, the daemon keeps running the old one.
    write_config(c, &format!("{config}{API}certificates: [\n"));
    let reload = c.sh(&format!("systemctl reload {unit}"));
    assert_ne!(reload.code, 0, "a broken config was reloaded: {reload:?}");
    let st = show(c, unit);
    assert_eq!(
        (st["ActiveState"].as_str(), st["MainPID"].as_str()),
        ("active", pid.as_str()),
        "the daemon did not keep running after a refused reload: {st:?}\n{}",
        journal(c, unit)
    );

    // Stop: SIGTERM, a clean exit 0 (not a SIGKILL after the stop timeout).
    c.must(&format!("systemctl stop {unit}"));
    let st = show(c, unit);
    assert_eq!(
        (
            st["ActiveState"].as_str(),
            st["Result"].as_str(),
            st["ExecMainCode"].as_str(),
            st["ExecMainStatus"].as_str()
        ),
        ("inactive", "success", "1", "0"),
        "the daemon did not exit 0 on stop (ExecMainCode 1 is \"exited\"): {st:?}\n{}",
        journal(c, unit)
    );
    c.must(&format!(
        "journalctl -u {unit} --no-pager | grep -q 'certkeeper daemon stopped'"
    ));
    c.must(&format!("systemctl disable {unit}"));
}

fn timer_has_a_next_elapse(c: &Container) {
    c.must("systemctl enable --now certkeeper.timer");
    let st = show(c, "certkeeper.timer");
    assert_eq!(
        (st["ActiveState"].as_str(), st["SubState"].as_str()),
        ("active", "waiting"),
        "{st:?}"
    );
    // systemctl prints the time as text ("Tue 2026-12-08 00:43:26 UTC"); date reads it.
    let next = c.sh("date -d \"$(systemctl show -P NextElapseUSecRealtime certkeeper.timer)\" +%s");
    let next: u64 = next
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no next elapse time: {st:?}\n{next:?}"));
    let now: u64 = c.must("date +%s").trim().parse().expect("date +%s");
    assert!(
        next > now,
        "the timer's next elapse ({next}) is not in the future (now {now})"
    );
    let timers = c.must("systemctl list-timers --all --no-pager certkeeper.timer");
    assert!(
        timers.contains("certkeeper.timer") && timers.contains("certkeeper.service"),
        "{timers}"
    );
}

/// `www`, deployed to nginx and due on every pass (before_expiry longer than the validity),
/// so that the unit's plain `certkeeper renew` renews it.
fn always_due() -> String {
    format!(
        "{}{DEPLOY}",
        FIRST.replace("before_expiry: 30d", "before_expiry: 100d")
    )
}

/// `systemctl start UNIT` (for a oneshot: until its pass ended).
fn start(c: &Container, unit: &str) -> crate::util::Run {
    c.sh(&format!("systemctl start {unit}"))
}

/// The states of a unit, its main PID and how its main process ended.
fn show(c: &Container, unit: &str) -> BTreeMap<String, String> {
    let out = c.must(&format!(
        "systemctl show -p ActiveState,SubState,Result,MainPID,ExecMainCode,ExecMainStatus {unit}"
    ));
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn journal(c: &Container, unit: &str) -> String {
    c.sh(&format!("journalctl -u {unit} --no-pager | tail -n 40"))
        .stdout
}

fn write_config(c: &Container, yaml: &str) {
    c.must(&format!(
        "cat > /etc/certkeeper/config.yaml <<'EOF'\n{yaml}EOF"
    ));
}

/// SHA-256 fingerprint of the first certificate of the live fullchain.
fn on_disk(c: &Container) -> String {
    c.must(&format!(
        "openssl x509 -in {FULLCHAIN} -noout -fingerprint -sha256"
    ))
    .trim()
    .to_owned()
}

/// SHA-256 fingerprint of the leaf nginx serves for [`SERVER_NAME`].
fn served(c: &Container) -> String {
    c.sh(&format!(
        "openssl s_client -connect 127.0.0.1:443 -servername {SERVER_NAME} </dev/null \
         2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    ))
    .stdout
    .trim()
    .to_owned()
}

/// Waits until nginx serves `fingerprint`.
fn wait_served(c: &Container, fingerprint: &str) {
    let deadline = Instant::now() + SERVE_TIMEOUT;
    loop {
        let now = served(c);
        if now == fingerprint {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not serve {fingerprint} within {SERVE_TIMEOUT:?}; it serves {now:?}\n{}",
            c.sh("journalctl -u nginx --no-pager | tail -n 20").stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `script` succeeds in the container; panics with `context()` after
/// [`SERVE_TIMEOUT`].
fn wait_for(c: &Container, script: &str, context: impl Fn() -> String) {
    let deadline = Instant::now() + SERVE_TIMEOUT;
    while c.sh(script).code != 0 {
        assert!(
            Instant::now() < deadline,
            "`{script}` did not succeed within {SERVE_TIMEOUT:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue point 10: the units and the README say why reload commands should go through
/// `systemctl reload` (what `oneshot_ends_what_its_reload_command_left_running` shows).
#[test]
fn units_and_readme_say_why_reloads_go_through_systemctl() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let running = readme
        .split("\n## ")
        .find(|s| s.starts_with("Running it"))
        .expect("README has a \"Running it\" section");
    let mut texts = vec![("README.md, Running it".to_owned(), running.to_owned())];
    for unit in ["certkeeper.service", "certkeeper-daemon.service"] {
        let text = std::fs::read_to_string(root.join("deploy").join(unit)).expect("unit");
        // Only the comments: the explanation is for the reader of the unit.
        let comments: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .map(str::trim)
            .collect();
        texts.push((format!("deploy/{unit}"), comments.join(" ")));
    }
    for (name, text) in texts {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in [
            "Reload commands should go through `systemctl reload SERVICE`",
            "`haproxy -sf`",
            "`apachectl -k graceful` while Apache is stopped",
            "control group",
            "systemd kills it",
        ] {
            assert!(text.contains(needle), "{name} does not say {needle:?}");
        }
    }
}

/// CI (and the README's second command, the same line) installs the host packages the boot
/// test needs.
#[test]
fn ci_installs_what_the_boot_test_needs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [".ci/run", "README.md"] {
        let text = std::fs::read_to_string(root.join(file)).expect("read");
        let line = text
            .lines()
            .find(|l| l.starts_with("apt-get update && ") && l.contains(" apt-get install -y "))
            .unwrap_or_else(|| panic!("{file} has no apt-get install line"));
        let packages: Vec<&str> = line
            .split("install -y ")
            .nth(1)
            .and_then(|r| r.split(" &&").next())
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        for p in nspawn::HOST_PACKAGES.split_whitespace() {
            assert!(packages.contains(&p), "{file} does not install {p}: {line}");
        }
    }
}

/// The container is Debian 12 whatever the host runs: the host's Debian entries are kept
/// with the release renamed, everything else (another distribution's suites, source
/// entries, disabled stanzas, CD-ROMs) is left out.
#[test]
fn host_apt_sources_are_renamed_to_bookworm() {
    let list = "\
# a comment
deb http://mirror.example/debian trixie main contrib
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian-security trixie-security main
deb-src http://mirror.example/debian trixie main
deb https://vendor.example/apt nodistro main
deb cdrom:[Debian]/ trixie main
";
    assert_eq!(
        nspawn::rewrite_one_line(list, "trixie"),
        "deb http://mirror.example/debian bookworm main contrib\n\
         deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://mirror.example/debian-security bookworm-security main\n"
    );
    let sources = "\
Types: deb deb-src
URIs: http://mirror.example/debian
Suites: trixie trixie-updates sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian
Suites: trixie-backports
Components: main
Enabled: no

Types: deb-src
URIs: http://mirror.example/debian
Suites: trixie
Components: main

Types: deb
URIs: https://vendor.example/apt
Suites: nodistro
Components: main
";
    assert_eq!(
        nspawn::rewrite_deb822(sources, "trixie"),
        "Types: deb\n\
         URIs: http://mirror.example/debian\n\
         Suites: bookworm bookworm-updates\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
    );
    // On bookworm itself nothing changes but the dropped entries.
    assert_eq!(
        nspawn::rewrite_one_line(
            "deb http://m.example/debian bookworm-updates main\n",
            "bookworm"
        ),
        "deb http://m.example/debian bookworm-updates main\n"
    );
}
