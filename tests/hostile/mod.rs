//! Hostile and broken input, through the binary as a user runs it, each run under a time
//! bound (`timeout`) and a memory bound (`prlimit --as`): whatever sits at a path certkeeper
//! reads (a FIFO, a device, a link to `/dev/zero`, `/proc`, a file far too large) gives one
//! clear line and the documented exit code, never a hang, never unbounded memory, and never a
//! change on disk from a command that must not write.

mod alerts;
mod misc;
mod providers;
mod recovery;
mod writes;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Dir, Run, bin};

/// The time any of these runs may take: far below "hangs", far above a loaded CI machine.
pub(crate) const BOUND: Duration = Duration::from_secs(60);

/// Runs the binary with `--config <dir>/<config>` under `timeout` and a 2 GiB address-space
/// limit; panics (naming the bound) when the bound is hit.
pub(crate) fn bounded(dir: &Dir, config: &str, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["--kill-after=5", &BOUND.as_secs().to_string()])
        .args(["prlimit", "--as=2147483648", bin(), "--config"])
        .arg(dir.join(config))
        .args(args)
        .env_remove("CERTKEEPER_CONFIG")
        .output()
        .expect("timeout and prlimit (coreutils, util-linux) are needed");
    let run = Run::from(out);
    assert!(
        run.code != 124 && run.code != 137 && started.elapsed() < BOUND,
        "{args:?} hit the {BOUND:?} bound: {run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    run
}

pub(crate) fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
}

pub(crate) fn listing(dir: &Path) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = walk(dir)
        .into_iter()
        .map(|p| {
            let link = p.symlink_metadata().unwrap().file_type().is_symlink();
            (p.display().to_string(), link)
        })
        .collect();
    out.sort();
    out
}

pub(crate) fn walk(path: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![path.to_owned()];
    if path.is_dir() && !path.symlink_metadata().unwrap().file_type().is_symlink() {
        for e in std::fs::read_dir(path).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

pub(crate) const CONFIG: &str = "state_dir: state\n\
    issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
    certificates:\n  - name: www\n    domains: [www.example.test]\n    issuer: internal\n    \
    fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n";

#[test]
fn a_fifo_or_a_device_at_a_live_path_is_reported_not_waited_on() {
    let dir = Dir::new();
    dir.config(CONFIG);
    mkfifo(&dir.join("live/www/fullchain.pem"));
    std::os::unix::fs::symlink("/dev/zero", dir.join("live/www/privkey.pem")).unwrap();
    let before = listing(dir.path());
    let run = bounded(&dir, "config.yaml", &["check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains("fullchain unreadable: ")
            && run.stdout.contains("(not a regular file (a FIFO))")
            && run
                .stdout
                .contains("(not a regular file (a character device))"),
        "{run:?}"
    );
    let run = bounded(&dir, "config.yaml", &["verify", "www"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = bounded(&dir, "config.yaml", &["metrics"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Nothing that only reads changed anything.
    assert_eq!(listing(dir.path()), before);

    // renew does not hang on the FIFO, and replaces neither it nor the link to a device:
    // the certificate fails with one line naming what is there (more in writes.rs).
    let live = listing(&dir.join("live"));
    let run = bounded(&dir, "config.yaml", &["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("www: FAILED: "), "{run:?}");
    assert_eq!(listing(&dir.join("live")), live, "{run:?}");
}

#[test]
fn a_config_that_is_not_a_regular_file_is_one_line() {
    let dir = Dir::new();
    mkfifo(&dir.join("fifo.yaml"));
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();
    for (config, what) in [("fifo.yaml", "a FIFO"), ("zero.yaml", "a character device")] {
        for (args, code) in [
            (&["check"][..], 3),
            (&["renew"][..], 2),
            (&["config", "check"][..], 2),
        ] {
            let run = bounded(&dir, config, args);
            assert_eq!(run.code, code, "{args:?} {run:?}");
            assert_eq!(
                run.stderr.trim(),
                format!(
                    "certkeeper: {}: cannot read config file: not a regular file ({what})",
                    dir.join(config).display()
                ),
                "{run:?}"
            );
        }
    }
    // Far too large (2 MiB of comments): refused without reading it all.
    dir.write("big.yaml", "#".repeat(2 * 1024 * 1024));
    let run = bounded(&dir, "big.yaml", &["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("larger than 1024 KiB"), "{run:?}");
}

#[test]
fn secret_and_trust_root_files_that_never_end_are_refused() {
    let dir = Dir::new();
    dir.config(
        "state_dir: state\n\
         issuers:\n  ca:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n    trust_roots: /dev/zero\n\
         dns_providers:\n  cf:\n    type: cloudflare\n    api_token_file: /dev/zero\n\
         certificates:\n  - name: www\n    domains: [www.example.test]\n    issuer: ca\n    dns_provider: cf\n    \
         fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
    );
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("not a regular file (a character device)"),
        "{run:?}"
    );
    assert!(!dir.join("state").exists());
}

#[test]
fn discovering_proc_is_bounded_in_time_and_memory() {
    let dir = Dir::new();
    dir.config("certificates: []\ndiscover:\n  paths: [/proc/self]\n");
    let run = bounded(&dir, "config.yaml", &["check"]);
    // Whatever /proc holds is no certificate: reported, not read without end.
    assert!([0, 2].contains(&run.code), "{run:?}");
    assert!(run.stdout.starts_with("CERTKEEPER "), "{run:?}");
}

#[test]
fn deeply_nested_configs_are_refused_at_once() {
    let dir = Dir::new();
    dir.write(
        "brackets.yaml",
        format!("certificates: {}", "[".repeat(100_000)),
    );
    dir.write(
        "dashes.yaml",
        format!("certificates:\n{}x\n", "- ".repeat(50_000)),
    );
    // Refused by a linear scan; the parser alone needs more than the bound for these.
    for config in ["brackets.yaml", "dashes.yaml"] {
        let run = bounded(&dir, config, &["config", "check"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        assert!(run.stderr.contains("deeper than"), "{run:?}");
    }
}

#[test]
fn every_command_that_writes_removes_what_a_crash_left_under_state_dir() {
    let dir = Dir::new();
    dir.config(CONFIG);
    assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
    assert_eq!(bounded(&dir, "config.yaml", &["renew", "--force"]).code, 0);
    // What crashes leave in each place certkeeper writes: a temporary directory holding a
    // private key (kept material, a new local CA), temporary files (a state record, a journal,
    // an account); and no `clean` marker, which the interrupted command removed before its
    // first write.
    let marker = dir.join("state/clean");
    let plant = || {
        assert!(
            marker.is_file(),
            "a command that ended well leaves the marker"
        );
        std::fs::remove_file(&marker).unwrap();
        [
            "state/pending/.certkeeper-tmp-www/privkey.pem",
            "state/ca/.certkeeper-tmp-internal/root.key",
            "state/state/.certkeeper-tmp-www.json",
            "state/journal/.certkeeper-tmp-www.json",
            "state/accounts/le/.certkeeper-tmp-account.json",
        ]
        .map(|path| dir.write(path, "secret"))
    };
    for command in [&["renew"][..], &["rollback", "www"]] {
        let planted = plant();
        let run = bounded(&dir, "config.yaml", command);
        assert_eq!(run.code, 0, "{command:?}: {run:?}");
        assert!(
            marker.is_file(),
            "{command:?} did not put the marker back: {run:?}"
        );
        for path in &planted {
            let name = path.file_name().unwrap().to_string_lossy();
            let temporary = if name.starts_with(".certkeeper-tmp-") {
                path.clone()
            } else {
                path.parent().unwrap().to_owned()
            };
            assert!(
                !temporary.exists(),
                "{command:?} left {temporary:?}: {run:?}"
            );
        }
    }
}

/// Runs the binary with stdout on `/dev/full` (every write fails with ENOSPC).
fn to_full_disk(dir: &Dir, args: &[&str]) -> Run {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .args(args)
        .stdout(full)
        .output()
        .unwrap();
    Run::from(out)
}

#[test]
fn an_output_that_cannot_be_written_is_a_failure_not_success() {
    let dir = Dir::new();
    dir.config(CONFIG);
    // Nagios: a check whose report is lost is UNKNOWN, never OK.
    for args in [&["check"][..], &["verify", "www"][..]] {
        let run = to_full_disk(&dir, args);
        assert_eq!(run.code, 3, "{args:?} {run:?}");
        assert!(
            run.stderr
                .contains("certkeeper: cannot write the output: No space left on device"),
            "{run:?}"
        );
    }
    let run = to_full_disk(&dir, &["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    // The pass itself was done.
    assert!(dir.join("live/www/fullchain.pem").exists());
    assert_eq!(to_full_disk(&dir, &["metrics"]).code, 1);
    assert_eq!(to_full_disk(&dir, &["snapshots", "www"]).code, 2);
    assert_eq!(to_full_disk(&dir, &["completions", "bash"]).code, 1);
    // A reader that stops early (`| head -1`) is no failure: check's status stands.
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg("check")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn untrusted_text_cannot_forge_a_row_or_recolour_a_terminal() {
    let dir = Dir::new();
    let forged = "x\u{1b}[32m\nCERTKEEPER OK - 0 certificates";
    let mut params = rcgen::CertificateParams::new(vec!["evil.example.test".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, forged);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    // In the certificate, and in the file's name.
    dir.write("tree/evil\u{1b}[0m\nok.pem", cert.pem());
    dir.config("certificates: []\ndiscover:\n  paths: [tree]\n");
    let run = bounded(&dir, "config.yaml", &["check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!run.stdout.contains('\u{1b}'), "{run:?}");
    // The summary, the header and one row: nothing forged.
    assert_eq!(run.stdout.lines().count(), 3, "{run:?}");
    assert!(run.stdout.starts_with("CERTKEEPER CRITICAL"), "{run:?}");
    assert!(run.stdout.contains("\\x1b"), "{run:?}");
    // JSON escapes as JSON does.
    let run = bounded(&dir, "config.yaml", &["check", "--json"]);
    assert!(!run.stdout.contains('\u{1b}'), "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        v[0]["subject"].as_str().unwrap().contains('\u{1b}'),
        "{v:#}"
    );
}

/// Two certificates on one config, with the given live paths.
fn two_certs(a: (&str, &str), b: (&str, &str)) -> String {
    format!(
        "state_dir: state\n\
         issuers:\n  internal:\n    type: local-ca\n\
         certificates:\n  - name: a\n    domains: [a.example.test]\n    issuer: internal\n    \
         fullchain: {}\n    privkey: {}\n  - name: b\n    domains: [b.example.test]\n    issuer: internal\n    \
         fullchain: {}\n    privkey: {}\n",
        a.0, a.1, b.0, b.1
    )
}

#[test]
fn paths_that_name_one_file_twice_are_refused_by_config_check() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.join("live/www")).unwrap();
    std::fs::create_dir_all(dir.join("live/other")).unwrap();
    // The same directory through a symlink, and through `..`.
    std::os::unix::fs::symlink(dir.join("live"), dir.join("alias")).unwrap();
    for b in [
        ("alias/www/fullchain.pem", "alias/www/privkey.b.pem"),
        ("live/other/../www/fullchain.pem", "live/www/privkey.b.pem"),
    ] {
        dir.config(&two_certs(
            ("live/www/fullchain.pem", "live/www/privkey.pem"),
            b,
        ));
        let before = listing(dir.path());
        let run = bounded(&dir, "config.yaml", &["config", "check"]);
        assert_eq!(run.code, 2, "{b:?} {run:?}");
        assert!(
            run.stderr.contains("certificates[1].fullchain: ")
                && run.stderr.contains("is also certificates[0].fullchain"),
            "{run:?}"
        );
        // renew refuses the same config before it writes anything.
        let run = bounded(&dir, "config.yaml", &["renew"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert_eq!(listing(dir.path()), before);
    }
}

#[test]
fn live_paths_inside_state_dir_and_overlong_names_are_refused() {
    let dir = Dir::new();
    dir.config(&two_certs(
        ("state/lock", "live/a/privkey.pem"),
        ("live/b/fullchain.pem", "state/../state/b.key"),
    ));
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("certificates[0].fullchain: ")
            && run.stderr.contains("certificates[1].privkey: ")
            && run.stderr.contains("is inside state_dir"),
        "{run:?}"
    );
    let long = "n".repeat(201);
    dir.config(&CONFIG.replace("name: www", &format!("name: {long}")));
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("the name is 201 bytes long; at most 200"),
        "{run:?}"
    );
    assert!(!dir.join("state").exists());
}

/// `check` in a loop beside `renew --force` passes (100 here, `HOSTILE_RENEWS=500` for the
/// long run): a pair and its manifest are read as one generation, so no run ever reports a
/// false integrity failure or a mixed pair.
#[test]
fn check_beside_renewals_never_sees_a_mixed_pair() {
    let dir = Dir::new();
    dir.config(CONFIG);
    assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
    let renews = crate::util::env_number("HOSTILE_RENEWS", 100);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let done = done.clone();
        let config = dir.join("config.yaml");
        std::thread::spawn(move || {
            let mut runs = 0u32;
            let mut bad = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new(bin())
                    .arg("--config")
                    .arg(&config)
                    .args(["check", "www"])
                    .output()
                    .unwrap();
                runs += 1;
                if out.status.code() != Some(0) {
                    bad.push(String::from_utf8_lossy(&out.stdout).into_owned());
                }
            }
            (runs, bad)
        })
    };
    for _ in 0..renews {
        let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (runs, bad) = checker.join().unwrap();
    assert!(runs > 10, "only {runs} checks ran");
    assert!(
        bad.is_empty(),
        "{} of {runs} checks were not OK: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn configs_and_secrets_others_can_write_are_refused_and_loose_ones_warned_about() {
    assert!(
        crate::util::is_root(),
        "this test changes owners; run the suite as root (CI does)"
    );
    let dir = Dir::new();
    let secret = dir.write("cf.token", "token-value\n");
    dir.config(&format!(
        "state_dir: state\n\
         issuers:\n  ca:\n    type: acme\n    directory: https://127.0.0.1:9/dir\n\
         dns_providers:\n  cf:\n    type: cloudflare\n    api_token_file: {}\n\
         certificates:\n  - name: www\n    domains: [www.example.test]\n    issuer: ca\n    dns_provider: cf\n    \
         fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n",
        secret.display()
    ));
    // The config names the commands certkeeper runs: writable by others, it is refused.
    chmod(&dir.join("config.yaml"), 0o666);
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("is writable by group or others (mode 0666)"),
        "{run:?}"
    );
    chmod(&dir.join("config.yaml"), 0o644);
    // A secret others can read: a warning; others can write: refused.
    chmod(&secret, 0o644);
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("secret file is readable by group or others (mode 0644)"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("token-value") && !run.stdout.contains("token-value"));
    chmod(&secret, 0o662);
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("is writable by group or others"),
        "{run:?}"
    );
}

#[test]
fn a_state_dir_another_user_owns_keeps_its_mode() {
    assert!(
        crate::util::is_root(),
        "this test changes owners; run the suite as root (CI does)"
    );
    let dir = Dir::new();
    dir.config(CONFIG);
    std::fs::create_dir(dir.join("state")).unwrap();
    chmod(&dir.join("state"), 0o755);
    std::os::unix::fs::chown(dir.join("state"), Some(65534), Some(65534)).unwrap();
    let run = bounded(&dir, "config.yaml", &["renew"]);
    assert!(
        run.stderr.contains("state_dir is owned by uid 65534")
            && run.stderr.contains("its mode is left as it is"),
        "{run:?}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("state")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn a_failed_deploy_says_whether_the_new_material_is_kept() {
    let dir = Dir::new();
    dir.config(CONFIG);
    // A directory where the fullchain must go: the deploy fails after issuing.
    std::fs::create_dir_all(dir.join("live/www/fullchain.pem")).unwrap();
    // Keeping the material fails too (a file where state_dir/pending must be).
    dir.write("state/pending", "");
    let run = bounded(&dir, "config.yaml", &["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("(the new material could not be kept; the next pass orders again)")
            && !run.stdout.contains("is kept and deployed"),
        "{run:?}"
    );
    // Keeping works: it says so, and the kept pair is there.
    std::fs::remove_file(dir.join("state/pending")).unwrap();
    let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("(the new material is kept and deployed on the next pass)"),
        "{run:?}"
    );
    assert!(dir.join("state/pending/www/privkey.pem").exists());
}

/// A DNS hook that never returns fails its certificate at the hook's timeout; the pass ends
/// and releases the lock (the next pass starts at once), and the other certificate of the
/// pass is renewed.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_hook_fails_its_certificate_and_the_pass_still_ends() {
    let pebble = crate::util::pebble::Pebble::start().await;
    let host = crate::renew_acme::Host::new(&pebble);
    host.config(
        &pebble,
        "30d",
        &[
            ("hung", "pebble", "silent", "ecdsa-p256"),
            ("fine", "pebble", "hook", "ecdsa-p256"),
        ],
    );
    crate::util::nginx::write_script(&host.dir.join("hooks/hang"), "#!/bin/sh\nexec sleep 300\n");
    let yaml = std::fs::read_to_string(host.dir.join("config.yaml"))
        .unwrap()
        .replace(
            "command: [hooks/silent]\n",
            "command: [hooks/hang]\n    timeout: 2s\n",
        );
    host.dir.config(&yaml);
    let run = bounded(&host.dir, "config.yaml", &["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("hung: FAILED: "), "{run:?}");
    assert!(
        run.stdout
            .contains("present hook did not finish within 2s and was killed"),
        "{run:?}"
    );
    assert!(run.stdout.contains("fine: renewed from pebble"), "{run:?}");
    // The lock is free: the next pass runs now and finds the failed one in its backoff.
    let run = bounded(&host.dir, "config.yaml", &["renew"]);
    assert!(run.stdout.contains("hung: last attempt failed"), "{run:?}");
    assert!(run.stdout.contains("fine: not due"), "{run:?}");
}

/// Unmounts a bind mount when dropped.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_bind_mount_cannot_make_one_file_two() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.join("live/www")).unwrap();
    std::fs::create_dir_all(dir.join("mirror")).unwrap();
    let mounted = Command::new("mount")
        .arg("--bind")
        .arg(dir.join("live"))
        .arg(dir.join("mirror"))
        .status()
        .expect("mount (util-linux) is needed");
    assert!(
        mounted.success(),
        "this test bind-mounts a directory and must run as root (CI does)"
    );
    let _guard = BindMount(dir.join("mirror"));
    dir.config(&two_certs(
        ("live/www/fullchain.pem", "live/www/privkey.pem"),
        ("mirror/www/fullchain.pem", "mirror/www/privkey.b.pem"),
    ));
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("is also certificates[0].fullchain"),
        "{run:?}"
    );
}
