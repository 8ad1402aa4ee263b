//! The deploy pipeline through the real binary against a real nginx, with the local CA:
//! stage → reload → verify → commit on an existing host (self-signed plain files adopted),
//! one reload for certificates sharing a command, and every way back: a failing reload
//! command, a broken nginx config, a service that keeps the old certificate, a reload that
//! hangs, a lost previous generation (restored from the snapshot) and an impossible revert;
//! then `certkeeper rollback` with its reload and verification.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::nginx::{Nginx, Site, quote, write_script};
use crate::util::sinks::{Behaviour, Sink, Vendor};
use crate::util::{Dir, Run, fixtures, key_matches_leaf};

/// The dividers around a command's output in a cause (src/deploy/reload.rs).
const OUTPUT_OPEN: &str = "---------- output ----------";
const OUTPUT_CLOSE: &str = "----------------------------";

/// How long an nginx reload may take to settle (see [`Host::settled`]).
const SETTLE: Duration = Duration::from_secs(2);

/// A host with self-signed plain files at each certificate's live paths and an nginx
/// serving them as `NAME.test`.
struct Host {
    // Declared first: nginx stops before its directory is removed.
    nginx: Nginx,
    dir: Dir,
    names: Vec<String>,
    /// The fingerprints of the self-signed leaves first found at the live paths.
    self_signed: Vec<String>,
}

/// A certificate's reload command and its timeout.
struct Reload {
    argv: Vec<String>,
    timeout: &'static str,
}

impl Reload {
    fn new(argv: Vec<String>) -> Reload {
        Reload {
            argv,
            timeout: "10s",
        }
    }

    fn script(path: &Path) -> Reload {
        Reload::new(vec![path.display().to_string()])
    }

    /// A reload that does nothing: nginx keeps serving what it loaded.
    fn noop() -> Reload {
        Reload::new(vec!["/bin/true".into()])
    }
}

impl Host {
    fn new(names: &[&str]) -> Host {
        let dir = Dir::new();
        let mut sites = Vec::new();
        let mut self_signed = Vec::new();
        for name in names {
            let (cert, key) = fixtures::self_signed_leaf(&[&format!("{name}.test")]);
            let fullchain = dir.write(&format!("live/{name}/fullchain.pem"), &cert);
            let privkey = dir.write(&format!("live/{name}/privkey.pem"), &key);
            self_signed.push(leaf_fingerprint(cert.as_bytes()));
            sites.push(Site::new(&format!("{name}.test"), fullchain, privkey));
        }
        let nginx = Nginx::start(&dir.join("nginx"), &sites);
        Host {
            nginx,
            dir,
            names: names.iter().map(|n| n.to_string()).collect(),
            self_signed,
        }
    }

    /// Writes the config: every certificate with `reload`, verified against nginx within
    /// `verify_timeout`.
    fn config(&self, reload: &Reload, verify_timeout: &str) {
        let mut yaml = String::from(
            "state_dir: state\n\
             issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
             renewal:\n  retry: { initial: 1h, max: 1d }\n\
             certificates:\n",
        );
        let command = serde_json::to_string(&reload.argv).unwrap();
        for name in &self.names {
            yaml.push_str(&format!(
                "  - name: {name}\n    domains: [{name}.test]\n    issuer: internal\n    \
                 fullchain: live/{name}/fullchain.pem\n    privkey: live/{name}/privkey.pem\n    \
                 reload: {{ command: {command}, timeout: {} }}\n    \
                 verify: {{ tls_connect: \"{}\", server_name: {name}.test, timeout: {verify_timeout} }}\n",
                reload.timeout,
                self.nginx.connect()
            ));
        }
        self.dir.config(&yaml);
    }

    fn run(&self, args: &[&str]) -> Run {
        self.dir.run(args)
    }

    /// Runs `renew` with `args` and asserts a clean renewal of every certificate.
    fn renew_ok(&self, args: &[&str]) -> Run {
        let run = self.run(&[&["renew"], args].concat());
        assert_eq!(run.code, 0, "{run:?}");
        for name in &self.names {
            assert!(
                run.stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}: renewed from "))),
                "{run:?}"
            );
        }
        run
    }

    /// The live pair's bytes: (fullchain, privkey).
    fn live(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        (
            std::fs::read(self.dir.join(&format!("live/{name}/fullchain.pem"))).unwrap(),
            std::fs::read(self.dir.join(&format!("live/{name}/privkey.pem"))).unwrap(),
        )
    }

    /// The fingerprint of the live leaf, as `check --json` reports it.
    fn check_fingerprint(&self, name: &str) -> String {
        let run = self.run(&["check", "--json"]);
        let entries: Vec<Value> =
            serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"));
        let entry = entries
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {run:?}"));
        entry["fingerprint"]
            .as_str()
            .unwrap_or_else(|| panic!("no fingerprint for {name}: {run:?}"))
            .to_owned()
    }

    /// The fingerprints of the snapshots of `name`, newest first, with their ids.
    fn snapshots(&self, name: &str) -> Vec<(String, String)> {
        let run = self.run(&["snapshots", "--json", name]);
        assert_eq!(run.code, 0, "{run:?}");
        let v: Vec<Value> = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{run:?}"));
        v.iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_owned(),
                    s["fingerprint"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The leaf kept in state/pending after a refused deploy.
    fn pending_fingerprint(&self, name: &str) -> String {
        let path = self
            .dir
            .join(&format!("state/pending/{name}/fullchain.pem"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("the refused material is not kept at {path:?}: {e}"));
        leaf_fingerprint(&bytes)
    }

    /// Adds a webhook alert channel to the config written last, taking `on`.
    fn alert_to(&self, sink: &Sink, on: &str) {
        let path = self.dir.join("config.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap();
        let alerts = format!(
            "alerts:\n  - type: webhook\n    url: \"{}\"\n    on: [{on}]\ncertificates:\n",
            sink.url()
        );
        std::fs::write(&path, yaml.replacen("certificates:\n", &alerts, 1)).unwrap();
    }

    /// A script in the test directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        write_script(&self.dir.join(name), &format!("#!/bin/sh\n{body}"))
    }

    /// A counting reload of the real nginx, and its counter file.
    fn counting(&self) -> (Reload, PathBuf) {
        let counter = self.dir.join("reloads");
        (
            Reload::script(&self.nginx.counting_reload(&counter)),
            counter,
        )
    }

    /// The leaf nginx serves for `name` now (use after anything that did not reload it).
    fn served(&self, name: &str) -> String {
        self.nginx.served(&format!("{name}.test"))
    }

    /// Asserts that nginx serves `fingerprint` for `name` once a reload has settled. During
    /// a reload the old worker accepts connections for a moment after the new one started
    /// (nginx signals old workers ~100 ms after starting new ones), so a connection just
    /// after certkeeper verified the new worker can still get the old leaf.
    fn settled(&self, name: &str, fingerprint: &str) {
        self.nginx
            .wait_served(&format!("{name}.test"), fingerprint, SETTLE);
    }
}

fn leaf_fingerprint(fullchain: &[u8]) -> String {
    let (certs, _) = certkeeper::x509::read_certificates(fullchain).expect("PEM certificates");
    certs[0].fingerprint.clone()
}

fn fingerprint_of(pair: &(Vec<u8>, Vec<u8>)) -> String {
    leaf_fingerprint(&pair.0)
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The stdout of `run` from `prefix` on: a certificate's outcome line with the continuation
/// lines of its cause (a command's output between dividers). Printed, for `--nocapture`.
fn outcome_of<'a>(run: &'a Run, prefix: &str) -> &'a str {
    let at = run
        .stdout
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {run:?}"));
    println!("{}", &run.stdout[at..]);
    &run.stdout[at..]
}

/// What follows `Cause: ` in an outcome.
fn cause_of<'a>(outcome: &'a str, run: &Run) -> &'a str {
    let at = outcome
        .find("Cause: ")
        .unwrap_or_else(|| panic!("no cause in {run:?}"));
    &outcome[at + "Cause: ".len()..]
}

#[test]
fn renew_reloads_once_and_nginx_serves_the_new_leaves() {
    let host = Host::new(&["a", "b", "c"]);
    let (reload, counter) = host.counting();
    host.config(&reload, "3s");
    let run = host.renew_ok(&[]);
    assert_eq!(run.stdout.lines().count(), 3, "{run:?}");
    for line in run.stdout.lines() {
        assert!(
            line.ends_with(
                ", previous pair kept as snapshot 000001; the plain files found at the live paths were adopted and are links into certkeeper's generations now"
            ),
            "{run:?}"
        );
    }
    // One reload, for all three, named in config order.
    let reloads = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(reloads, "reload a b c\n", "{run:?}");
    for (name, self_signed) in host.names.iter().zip(&host.self_signed) {
        let live = host.check_fingerprint(name);
        assert_ne!(&live, self_signed, "{name} still has its self-signed leaf");
        assert_eq!(
            live,
            fingerprint_of(&host.live(name)),
            "check --json disagrees with the live file"
        );
        host.settled(name, &live);
        assert_eq!(
            host.served(name),
            live,
            "nginx does not serve {name}'s new leaf"
        );
    }

    let run = host.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    for name in &host.names {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name}: not due (renews from "))),
            "{run:?}"
        );
    }
    assert_eq!(lines_in(&counter), 1, "a pass with nothing due reloaded");
}

#[test]
fn a_failing_reload_command_rolls_back() {
    let host = Host::new(&["www"]);
    let (reload, _) = host.counting();
    host.config(&reload, "3s");
    host.renew_ok(&[]);
    let before = host.live("www");
    let old = fingerprint_of(&before);
    host.settled("www", &old);

    let refuse = host.script("refuse.sh", "echo 'reload refused by test' >&2\nexit 1\n");
    host.config(&Reload::script(&refuse), "3s");
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let outcome = outcome_of(
        &run,
        "www: ROLLED BACK: the new certificate from internal was refused and the previous pair is live and served again",
    );
    assert_eq!(
        cause_of(outcome, &run),
        format!(
            "reload failed: reload command {} exited with status 1\n{OUTPUT_OPEN}\nreload refused by test\n{OUTPUT_CLOSE}\n",
            refuse.display()
        ),
        "{run:?}"
    );

    assert!(host.live("www") == before, "the live pair changed: {run:?}");
    assert_eq!(host.served("www"), old, "nginx does not serve the old leaf");
    let rejected = host.pending_fingerprint("www");
    assert_ne!(rejected, old);
    let snaps = host.snapshots("www");
    assert!(
        snaps.iter().all(|(_, fp)| *fp != rejected),
        "the rejected leaf {rejected} was snapshotted: {snaps:?}"
    );
    // What the snapshots hold: the self-signed pair, nothing else.
    assert_eq!(
        snaps.iter().map(|(_, fp)| fp.as_str()).collect::<Vec<_>>(),
        vec![host.self_signed[0].as_str()]
    );
}

#[test]
fn a_broken_nginx_config_rolls_back() {
    let host = Host::new(&["www"]);
    host.config(&Reload::new(host.nginx.reload_argv()), "3s");
    host.renew_ok(&[]);
    let before = host.live("www");
    let old = fingerprint_of(&before);
    host.settled("www", &old);

    host.nginx.break_config();
    let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
    host.alert_to(&sink, "renewed, rolled_back");
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let outcome = outcome_of(&run, "www: ROLLED BACK: ");
    let cause = cause_of(outcome, &run);
    // The alert says what failed, on one line, with nginx's own words.
    let got = sink.accepted();
    assert_eq!(got.len(), 1, "{:?}", sink.requests());
    let event = got[0].json.clone().unwrap();
    println!("{}", serde_json::to_string_pretty(&event).unwrap());
    assert_eq!(event["event"], "rolled_back");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.starts_with("the new certificate from internal was refused and the previous pair is served again: reload failed: reload command ")
            && message.contains("nginx: [emerg] unknown directive")
            && !message.contains('\n'),
        "{message}"
    );
    let nginx_bin = &host.nginx.reload_argv()[0];
    assert!(
        cause.starts_with(&format!(
            "reload failed: reload command {nginx_bin} exited with status 1\n{OUTPUT_OPEN}\n"
        )),
        "{run:?}"
    );
    assert!(
        cause.contains(&format!(
            "nginx: [emerg] unknown directive \"this_is_not_an_nginx_directive\" in {}:",
            host.nginx.conf().display()
        )),
        "{run:?}"
    );
    assert!(host.live("www") == before, "the live pair changed: {run:?}");
    assert_eq!(host.served("www"), old);
}

#[test]
fn a_service_that_keeps_the_old_certificate_rolls_back() {
    let host = Host::new(&["www"]);
    // The first deploy on the existing host: the adopted self-signed pair comes back.
    host.config(&Reload::noop(), "2s");
    let before = host.live("www");
    let run = host.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let outcome = outcome_of(&run, "www: ROLLED BACK: ");
    assert!(
        outcome.contains("Cause: verify failed: www.test at 127.0.0.1:"),
        "{run:?}"
    );
    assert!(
        outcome.contains("did not serve the expected certificate within 2s"),
        "{run:?}"
    );
    assert!(host.live("www") == before, "the live pair changed: {run:?}");
    assert_eq!(host.served("www"), host.self_signed[0]);

    // Once more from a pair certkeeper deployed itself.
    let (reload, _) = host.counting();
    host.config(&reload, "3s");
    host.renew_ok(&["--force"]);
    let before = host.live("www");
    let old = fingerprint_of(&before);
    host.settled("www", &old);
    host.config(&Reload::noop(), "2s");
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let outcome = outcome_of(&run, "www: ROLLED BACK: ");
    assert!(
        outcome.contains("did not serve the expected certificate within 2s"),
        "{run:?}"
    );
    assert!(host.live("www") == before, "the live pair changed: {run:?}");
    assert_eq!(host.served("www"), old);
}

/// A script that removes every generation of `name` but the live one, and with `snapshots`
/// also its snapshots, then fails; with `once`, later runs reload nginx instead.
fn remover(host: &Host, name: &str, snapshots: bool, once: bool) -> PathBuf {
    let live_dir = host.dir.join(&format!("live/{name}"));
    let marker = host.dir.join("removed");
    let mut body = String::new();
    if once {
        body.push_str(&format!(
            "if [ -e {m} ]; then exec {reload}; fi\ntouch {m}\n",
            m = quote(&marker.display().to_string()),
            reload = host
                .nginx
                .reload_argv()
                .iter()
                .map(|a| quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    body.push_str(&format!(
        "cd {} || exit 2\nlive=$(readlink .certkeeper-{name}.live)\n\
         for g in .certkeeper-{name}.gen-*; do\n  [ \"$g\" = \"$live\" ] || rm -rf \"$g\"\ndone\n",
        quote(&live_dir.display().to_string())
    ));
    if snapshots {
        body.push_str(&format!(
            "rm -rf {}\n",
            quote(
                &host
                    .dir
                    .join(&format!("state/snapshots/{name}"))
                    .display()
                    .to_string()
            )
        ));
    }
    body.push_str("echo 'removed the previous generation' >&2\nexit 1\n");
    host.script("remove.sh", &body)
}

/// The generation directories of `name`.
fn generations(host: &Host, name: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(host.dir.join(&format!("live/{name}")))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!(".certkeeper-{name}.gen-")))
        .collect();
    out.sort();
    out
}

#[test]
fn an_impossible_rollback_is_rollback_failed() {
    let host = Host::new(&["www"]);
    host.config(&Reload::new(host.nginx.reload_argv()), "3s");
    host.renew_ok(&[]);
    let old = fingerprint_of(&host.live("www"));

    host.config(&Reload::script(&remover(&host, "www", true, false)), "3s");
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let outcome = outcome_of(
        &run,
        "www: ROLLBACK FAILED: the new certificate from internal was refused, and ",
    );
    assert!(
        outcome.contains("Act now. Cause: reload failed: "),
        "{run:?}"
    );
    assert!(
        outcome.contains("removed the previous generation"),
        "{run:?}"
    );
    // The rejected pair stays live, whole: the only whole pair there is.
    let live = host.live("www");
    assert!(
        key_matches_leaf(&live.0, &live.1),
        "the live pair is mixed: {run:?}"
    );
    let new = fingerprint_of(&live);
    assert_ne!(new, old, "{run:?}");
    assert_eq!(generations(&host, "www").len(), 1, "{run:?}");
    assert!(!host.dir.join("state/snapshots/www").exists());
}

#[test]
fn a_lost_previous_generation_is_restored_from_the_snapshot() {
    let host = Host::new(&["www"]);
    host.config(&Reload::new(host.nginx.reload_argv()), "3s");
    host.renew_ok(&[]);
    let before = host.live("www");
    let old = fingerprint_of(&before);

    host.config(&Reload::script(&remover(&host, "www", false, true)), "3s");
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let outcome = outcome_of(&run, "www: ROLLED BACK: ");
    assert!(
        outcome.contains("(the previous generation was gone; restored from snapshot 00000"),
        "{run:?}"
    );
    assert!(
        outcome.contains("removed the previous generation"),
        "{run:?}"
    );
    assert!(host.live("www") == before, "the live pair changed: {run:?}");
    assert_eq!(host.served("www"), old);
    let rejected = host.pending_fingerprint("www");
    assert!(
        host.snapshots("www").iter().all(|(_, fp)| *fp != rejected),
        "the rejected leaf was snapshotted"
    );
}

/// Whether a process is alive: /proc/PID/stat exists and its state is not zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name in parentheses, which may itself hold ") ".
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .unwrap_or("");
    state != "Z"
}

#[test]
fn a_reload_that_hangs_is_killed_and_rolled_back() {
    let host = Host::new(&["www"]);
    host.config(&Reload::new(host.nginx.reload_argv()), "3s");
    host.renew_ok(&[]);
    let before = host.live("www");
    let old = fingerprint_of(&before);

    let pids = host.dir.join("pids");
    let p = quote(&pids.display().to_string());
    let hang = host.script(
        "hang.sh",
        &format!("echo $$ >> {p}\nsleep 300 &\necho $! >> {p}\nsleep 300\n"),
    );
    let reload = Reload {
        argv: vec![hang.display().to_string()],
        timeout: "2s",
    };
    host.config(&reload, "3s");
    let started = Instant::now();
    let run = host.run(&["renew", "--force"]);
    let took = started.elapsed();
    // Two reloads killed at their timeout and one verification (7 s), with a wide margin far
    // below the 300 s the hung command would take.
    assert!(
        took < Duration::from_secs(60),
        "renew took {took:?}: {run:?}"
    );
    assert_eq!(run.code, 1, "{run:?}");
    let outcome = outcome_of(&run, "www: ROLLED BACK: ");
    assert!(
        outcome.contains("Cause: reload failed: reload command ")
            && outcome.contains(" did not finish within 2s and was killed"),
        "{run:?}"
    );
    assert!(host.live("www") == before, "the live pair changed: {run:?}");
    assert_eq!(host.served("www"), old);

    let recorded: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    // The script and its background sleep, for the reload and for the one after the revert.
    assert_eq!(recorded.len(), 4, "pids: {recorded:?}; {run:?}");
    for pid in recorded {
        assert!(!alive(pid), "pid {pid} of the hung reload is still alive");
    }
}

#[test]
fn rollback_command_reloads_and_verifies() {
    let host = Host::new(&["www"]);
    let (reload, counter) = host.counting();
    host.config(&reload, "3s");
    host.renew_ok(&[]);
    let a = host.live("www");
    host.renew_ok(&["--force"]);
    let b = host.live("www");
    assert_ne!(fingerprint_of(&a), fingerprint_of(&b));
    host.settled("www", &fingerprint_of(&b));
    assert_eq!(lines_in(&counter), 2);

    let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
    host.alert_to(&sink, "rolled_back");
    let run = host.run(&["rollback", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("; reloaded, and the restored certificate is served"),
        "{run:?}"
    );
    let got = sink.accepted();
    assert_eq!(got.len(), 1, "{:?}", sink.requests());
    let event = got[0].json.clone().unwrap();
    assert_eq!(event["event"], "rolled_back");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("rolled back by `certkeeper rollback` to snapshot "),
        "{event}"
    );
    // The alert names the snapshot it restored, as a field.
    let named = event["message"].as_str().unwrap()
        ["rolled back by `certkeeper rollback` to snapshot ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(event["snapshot"], named.as_str(), "{event}");
    assert!(host.live("www") == a, "rollback did not restore A: {run:?}");
    host.settled("www", &fingerprint_of(&a));
    assert_eq!(
        lines_in(&counter),
        3,
        "rollback did not reload once: {run:?}"
    );

    // A rollback whose target nginx never serves: what was live before is live again.
    host.config(&Reload::noop(), "2s");
    let target = host
        .snapshots("www")
        .into_iter()
        .find(|(_, fp)| *fp == fingerprint_of(&b))
        .map(|(id, _)| id)
        .expect("a snapshot of B");
    let run = host.run(&["rollback", "www", "--to", &target]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "certkeeper: rollback www: snapshot {target} was restored but refused: verify failed: "
        )),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains("the pair that was live before is live and served again; nothing changed"),
        "{run:?}"
    );
    assert!(
        host.live("www") == a,
        "the pair live before is not live: {run:?}"
    );
    assert_eq!(host.served("www"), fingerprint_of(&a));
}

/// With nginx's config broken, a rollback cannot reload: nginx keeps serving what it loaded,
/// so the restored snapshot is refused and the pair live before goes back. That pair is
/// served all along: `rollback` says so (the same judgement as a pass's revert), and
/// neither says ROLLBACK FAILED nor alerts `rollback_failed`.
#[test]
fn a_rollback_with_a_broken_service_config_tells_what_is_served() {
    let host = Host::new(&["www"]);
    host.config(&Reload::new(host.nginx.reload_argv()), "3s");
    host.renew_ok(&[]);
    host.renew_ok(&["--force"]);
    let b = fingerprint_of(&host.live("www"));
    host.settled("www", &b);

    host.nginx.break_config();
    let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
    host.alert_to(&sink, "rolled_back, rollback_failed");
    let run = host.run(&["rollback", "www"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!run.stderr.contains("ROLLBACK FAILED"), "{run:?}");
    assert!(
        run.stderr
            .contains("was restored but refused: verify failed: ")
            && run.stderr.contains(
                "the pair that was live before is live and served again; nothing changed"
            ),
        "{run:?}"
    );
    assert_eq!(fingerprint_of(&host.live("www")), b);
    assert_eq!(host.served("www"), b);
    assert!(
        sink.accepted()
            .iter()
            .all(|r| r.json.as_ref().unwrap()["event"] != "rollback_failed"),
        "{:?}",
        sink.requests()
    );

    // A pass in the same state agrees: the restored certificate is served.
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let outcome = outcome_of(&run, "www: ROLLED BACK: ");
    assert!(
        outcome.contains("the restored certificate is served"),
        "{run:?}"
    );
    assert_eq!(host.served("www"), b);
}

#[test]
fn the_rejected_pair_is_never_the_default_rollback_target() {
    let host = Host::new(&["www"]);
    let (reload, _) = host.counting();
    host.config(&reload, "3s");
    host.renew_ok(&[]);
    let a = host.live("www");
    host.renew_ok(&["--force"]);
    let b = host.live("www");

    host.config(&Reload::noop(), "2s");
    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    outcome_of(&run, "www: ROLLED BACK: ");
    assert!(host.live("www") == b, "{run:?}");
    let c = host.pending_fingerprint("www");

    host.config(&reload, "3s");
    let run = host.run(&["rollback", "www"]);
    assert_eq!(run.code, 0, "{run:?}");
    let live = fingerprint_of(&host.live("www"));
    assert_ne!(live, c, "rollback restored the rejected pair: {run:?}");
    assert!(host.live("www") == a, "rollback did not restore A: {run:?}");
    host.settled("www", &live);
    let snaps = host.snapshots("www");
    assert!(
        snaps.iter().all(|(_, fp)| *fp != c),
        "the rejected leaf {c} is in a snapshot: {snaps:?}"
    );
}

/// Not a test but the deploy benchmark (bench/deploy.sh): for 1 and 50 certificates sharing
/// one nginx, the time a `renew --force` pass spends in reload + verify (from its log), the
/// whole pass, and next to it the time of one `nginx -s reload` per certificate, as a
/// per-certificate deploy hook (certbot's `--deploy-hook`, lego's `--deploy-hook`) runs it,
/// without any verification, measured in the same run against the same nginx.
/// `CERTKEEPER_BENCH_LOG=1` prints the pass's log, with the reload and each verification timed.
#[test]
#[ignore = "benchmark; run with bench/deploy.sh"]
fn bench_reload_and_verify() {
    for n in [1usize, 50] {
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let host = Host::new(&refs);
        host.config(&Reload::new(host.nginx.reload_argv()), "10s");
        host.renew_ok(&[]);
        let started = Instant::now();
        let run = host.run(&["--log-format", "json", "-v", "renew", "--force"]);
        let pass = started.elapsed();
        assert_eq!(run.code, 0, "{run:?}");
        let in_deploy = run
            .stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["fields"]["message"] == "Reloaded and verified.")
            .and_then(|v| v["fields"]["elapsed_ms"].as_u64())
            .unwrap_or_else(|| panic!("no timing in the log: {run:?}"));
        if std::env::var_os("CERTKEEPER_BENCH_LOG").is_some() {
            eprintln!("{}", run.stderr);
        }
        let started = Instant::now();
        for _ in 0..n {
            let status = std::process::Command::new(&host.nginx.reload_argv()[0])
                .args(&host.nginx.reload_argv()[1..])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let per_cert_hooks = started.elapsed();
        println!(
            "bench certificates={n} reload_and_verify_ms={in_deploy} pass_ms={} per_certificate_reloads_ms={} ratio={:.2}",
            pass.as_millis(),
            per_cert_hooks.as_millis(),
            per_cert_hooks.as_secs_f64() * 1000.0 / in_deploy.max(1) as f64
        );
    }
}

#[test]
fn a_refused_certificate_is_rolled_back_alone_in_its_reload_group() {
    let host = Host::new(&["a", "b"]);
    let (reload, counter) = host.counting();
    host.config(&reload, "3s");
    host.renew_ok(&[]);
    let (a_old, b_old) = (
        fingerprint_of(&host.live("a")),
        fingerprint_of(&host.live("b")),
    );
    let b_before = host.live("b");
    // b's health check accepts only the leaf b has now: its new one is refused.
    let only_current = host.script(
        "only-current.sh",
        &format!("test \"$CERTKEEPER_FINGERPRINT\" = {b_old}\n"),
    );
    let yaml = std::fs::read_to_string(host.dir.join("config.yaml")).unwrap();
    let b_verify = "server_name: b.test, timeout: 3s";
    assert!(yaml.contains(b_verify));
    host.dir.config(&yaml.replace(
        b_verify,
        &format!("{b_verify}, command: [\"{}\"]", only_current.display()),
    ));

    let run = host.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("a: renewed from internal")),
        "{run:?}"
    );
    let outcome = outcome_of(&run, "b: ROLLED BACK: ");
    assert!(
        cause_of(outcome, &run).starts_with("verify failed: the health check did not pass within"),
        "{run:?}"
    );
    // The first pass, then one reload for both and one more after b's revert; a stays
    // renewed and served.
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "reload a b\nreload a b\nreload b\n",
        "{run:?}"
    );
    assert_eq!(host.live("b"), b_before, "b's previous pair is not back");
    let a_new = fingerprint_of(&host.live("a"));
    assert_ne!(a_new, a_old);
    host.settled("a", &a_new);
    host.settled("b", &b_old);
}

/// A service being set up: certkeeper issues its first pair before nginx can start (nginx
/// needs the files), the reload fails, and the new pair stays in place; nginx starts on it,
/// and the next pass reloads and verifies it, without ordering.
#[test]
fn a_first_deploy_to_a_stopped_nginx_keeps_the_pair_and_the_next_pass_serves_it() {
    let dir = Dir::new();
    let nginx_dir = dir.join("nginx");
    let reload = serde_json::to_string(&Nginx::reload_argv_in(&nginx_dir)).unwrap();
    let config = |port: u16| {
        format!(
            "state_dir: state\n\
             issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
             renewal:\n  retry: {{ initial: 1h, max: 1d }}\n\
             certificates:\n  - name: www\n    domains: [www.test]\n    issuer: internal\n    \
             fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n    \
             reload: {{ command: {reload}, timeout: 5s }}\n    \
             verify: {{ tls_connect: \"127.0.0.1:{port}\", server_name: www.test, timeout: 3s }}\n"
        )
    };
    // Nothing listens yet where the service will.
    dir.config(&config(crate::util::pebble::free_tcp_port()));
    let run = dir.run(&["renew"]);
    println!("service down: renew exits {}\n{}", run.code, run.stdout);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with(
            "www: FAILED: the new certificate from internal is live and stays in place"
        ) && run.stdout.contains("reload failed: "),
        "{run:?}"
    );
    let live = std::fs::read(dir.join("live/www/fullchain.pem")).unwrap();
    let fingerprint = leaf_fingerprint(&live);

    // The service starts on the kept pair; the next pass reloads and verifies it.
    let nginx = Nginx::start(
        &nginx_dir,
        &[Site::new(
            "www.test",
            dir.join("live/www/fullchain.pem"),
            dir.join("live/www/privkey.pem"),
        )],
    );
    dir.config(&config(nginx.port));
    let run = dir.run(&["renew"]);
    println!("service started: renew exits {}\n{}", run.code, run.stdout);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("www: renewed from the pair an earlier pass deployed"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        live,
        "a new pair was ordered"
    );
    assert_eq!(nginx.served("www.test"), fingerprint);
    let run = dir.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("www: not due"), "{run:?}");
}
