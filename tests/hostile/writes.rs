//! Hostile input, round two: writes. Whatever sits where certkeeper writes (a device node, a
//! FIFO, a socket, a link to one of them) is refused with one line and left as it is; a
//! reload command that damages the live pair or state_dir is a failure with that cause, and
//! a local CA whose files vanished is never replaced by a new root silently.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{bounded, listing, mkfifo};
use crate::util::sinks::{Behaviour, Sink, Vendor};
use crate::util::{Dir, Run};

/// What a test plants where certkeeper writes.
#[derive(Clone, Copy, Debug)]
enum Node {
    /// `mknod c 1 3` (a /dev/null).
    Char,
    /// `mknod b 7 0` (a loop device's numbers; never opened).
    Block,
    Fifo,
    Socket,
    /// A link (not certkeeper's) to a character device node.
    LinkToChar,
    /// A link (not certkeeper's) to a FIFO.
    LinkToFifo,
}

const NODES: [Node; 6] = [
    Node::Char,
    Node::Block,
    Node::Fifo,
    Node::Socket,
    Node::LinkToChar,
    Node::LinkToFifo,
];

impl Node {
    /// Makes the node at `path` (its directory too); the targets of links go beside it.
    fn make(self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mknod = |path: &Path, kind, major, minor| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                path,
                kind,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::makedev(major, minor),
            )
            .unwrap_or_else(|e| panic!("mknod {} (tests run as root): {e}", path.display()))
        };
        let aside = |what: &str| {
            let mut name = path.file_name().unwrap().to_owned();
            name.push(format!(".{what}-target"));
            path.with_file_name(name)
        };
        match self {
            Node::Char => mknod(path, rustix::fs::FileType::CharacterDevice, 1, 3),
            Node::Block => mknod(path, rustix::fs::FileType::BlockDevice, 7, 0),
            Node::Fifo => mkfifo(path),
            Node::Socket => {
                std::os::unix::net::UnixListener::bind(path).unwrap();
            }
            Node::LinkToChar => {
                let target = aside("char");
                Node::Char.make(&target);
                std::os::unix::fs::symlink(&target, path).unwrap();
            }
            Node::LinkToFifo => {
                let target = aside("fifo");
                Node::Fifo.make(&target);
                std::os::unix::fs::symlink(&target, path).unwrap();
            }
        }
    }

    /// How certkeeper names it.
    fn what(self) -> &'static str {
        match self {
            Node::Char => "a character device",
            Node::Block => "a block device",
            Node::Fifo => "a FIFO",
            Node::Socket => "a socket",
            Node::LinkToChar => "a symlink to a character device",
            Node::LinkToFifo => "a symlink to a FIFO",
        }
    }

    /// Whether `path` still holds this node.
    fn is_at(self, path: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return false;
        };
        let t = meta.file_type();
        match self {
            Node::Char => t.is_char_device(),
            Node::Block => t.is_block_device(),
            Node::Fifo => t.is_fifo(),
            Node::Socket => t.is_socket(),
            Node::LinkToChar => {
                t.is_symlink()
                    && std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
            }
            Node::LinkToFifo => {
                t.is_symlink() && std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
            }
        }
    }
}

/// Two local-CA certificates, `www` and `api`, each in its own live directory.
const TWO: &str = "state_dir: state\n\
    issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
    certificates:\n  - name: www\n    domains: [www.example.test]\n    issuer: internal\n    \
    fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n  \
    - name: api\n    domains: [api.example.test]\n    issuer: internal\n    \
    fullchain: live/api/fullchain.pem\n    privkey: live/api/privkey.pem\n";

/// The one line of `run`'s stdout about certificate `name`.
fn line_of<'a>(run: &'a Run, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    lines[0]
}

#[test]
fn renew_never_replaces_a_device_fifo_or_socket_given_as_textfile() {
    for node in NODES {
        let dir = Dir::new();
        dir.config(super::CONFIG);
        let target = dir.join("metrics/certkeeper.prom");
        node.make(&target);
        let before = listing(dir.path());
        let run = bounded(
            &dir,
            "config.yaml",
            &["renew", "--textfile", target.to_str().unwrap()],
        );
        // As an output that cannot be written: the command failed.
        assert_eq!(run.code, 1, "{node:?} {run:?}");
        let stderr = run.stderr.trim();
        assert_eq!(stderr.lines().count(), 1, "{node:?} {run:?}");
        assert!(
            stderr.contains(&target.display().to_string()) && stderr.contains(node.what()),
            "{node:?} {run:?}"
        );
        assert!(node.is_at(&target), "{node:?} was replaced: {run:?}");
        // Refused before anything was done: nothing at all changed.
        assert_eq!(listing(dir.path()), before, "{node:?} {run:?}");
    }
}

#[test]
fn a_live_path_holding_a_device_fifo_or_socket_is_refused_and_left_as_it_is() {
    let mut cases: Vec<(Node, &str)> = NODES.iter().map(|&n| (n, "privkey")).collect();
    cases.extend([(Node::Fifo, "fullchain"), (Node::Socket, "fullchain")]);
    for (node, which) in cases {
        let dir = Dir::new();
        dir.config(TWO);
        let path = dir.join(&format!("live/www/{which}.pem"));
        node.make(&path);
        let before = listing(&dir.join("live/www"));

        // config check says so, naming the key.
        let run = bounded(&dir, "config.yaml", &["config", "check"]);
        assert_eq!(run.code, 2, "{node:?} {which} {run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{node:?} {run:?}");
        assert!(
            run.stderr.contains(&format!("certificates[0].{which}"))
                && run.stderr.contains(&path.display().to_string())
                && run.stderr.contains(node.what()),
            "{node:?} {which} {run:?}"
        );

        // renew (and the daemon's pass): www fails with one line, api is renewed.
        for args in [&["renew"][..], &["run", "--once"][..]] {
            let run = bounded(&dir, "config.yaml", args);
            assert_eq!(run.code, 1, "{node:?} {which} {args:?} {run:?}");
            let www = line_of(&run, "www");
            assert!(
                www.starts_with("www: FAILED: ")
                    && www.contains(&path.display().to_string())
                    && www.contains(node.what()),
                "{node:?} {which} {run:?}"
            );
            assert!(
                line_of(&run, "api").starts_with("api: renewed") || args[0] == "run",
                "{run:?}"
            );
            assert!(node.is_at(&path), "{node:?} {which} was replaced: {run:?}");
            assert_eq!(listing(&dir.join("live/www")), before, "{node:?} {run:?}");
        }
        assert!(dir.join("live/api/fullchain.pem").exists());
    }
}

#[test]
fn a_live_directory_that_is_a_fifo_is_refused() {
    let dir = Dir::new();
    dir.config(TWO);
    let live = dir.join("live/www");
    Node::Fifo.make(&live);
    let run = bounded(&dir, "config.yaml", &["config", "check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&live.display().to_string()) && run.stderr.contains("a FIFO"),
        "{run:?}"
    );
    let run = bounded(&dir, "config.yaml", &["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let www = line_of(&run, "www");
    assert!(
        www.starts_with("www: FAILED: ")
            && www.contains(&live.display().to_string())
            && www.contains("a FIFO"),
        "{run:?}"
    );
    assert!(Node::Fifo.is_at(&live));
    assert!(line_of(&run, "api").starts_with("api: renewed"), "{run:?}");
}

#[test]
fn rollback_never_replaces_a_fifo_or_device_at_a_live_path() {
    for node in [Node::Fifo, Node::Char, Node::LinkToFifo] {
        let dir = Dir::new();
        dir.config(super::CONFIG);
        assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
        assert_eq!(bounded(&dir, "config.yaml", &["renew", "--force"]).code, 0);
        let key = dir.join("live/www/privkey.pem");
        std::fs::remove_file(&key).unwrap();
        node.make(&key);
        let before = listing(dir.path());
        let run = bounded(&dir, "config.yaml", &["rollback", "www"]);
        assert_eq!(run.code, 1, "{node:?} {run:?}");
        assert!(
            run.stderr.contains(&key.display().to_string()) && run.stderr.contains(node.what()),
            "{node:?} {run:?}"
        );
        assert!(node.is_at(&key), "{node:?} {run:?}");
        // Nothing changed: no generation, no snapshot, no journal.
        let after: Vec<_> = listing(dir.path())
            .into_iter()
            .filter(|(p, _)| !p.ends_with("/state/clean"))
            .collect();
        let before: Vec<_> = before
            .into_iter()
            .filter(|(p, _)| !p.ends_with("/state/clean"))
            .collect();
        assert_eq!(after, before, "{node:?} {run:?}");
    }
}

#[test]
fn what_sits_in_state_dir_where_certkeeper_writes_is_refused_and_left() {
    // Paths under state_dir that every certificate shares: the whole command is refused.
    let shared = [
        ("state/lock", Node::Fifo),
        ("state/lock", Node::Char),
        ("state/clean", Node::Socket),
        ("state/pass.json", Node::Fifo),
        ("state/ari.json", Node::LinkToChar),
        ("state/pending", Node::Fifo),
        ("state/snapshots", Node::Socket),
    ];
    // Paths of one certificate: that certificate fails, the other renews.
    let own = [
        ("state/state/www.json", Node::Fifo),
        ("state/state/www.json", Node::Block),
        ("state/journal/www.json", Node::Socket),
        ("state/pending/www", Node::Fifo),
        ("state/snapshots/www", Node::Socket),
        ("state/snapshots/www/000001", Node::Fifo),
    ];
    for (rel, node, is_shared) in shared
        .iter()
        .map(|&(r, n)| (r, n, true))
        .chain(own.iter().map(|&(r, n)| (r, n, false)))
    {
        let dir = Dir::new();
        dir.config(TWO);
        // A first pass makes state_dir, the local CA and both pairs.
        assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
        let path = dir.join(rel);
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
        node.make(&path);
        let live_before = listing(&dir.join("live"));
        let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
        assert_eq!(run.code, 1, "{rel} {node:?} {run:?}");
        let shown = path.display().to_string();
        if is_shared {
            let stderr = run.stderr.trim();
            assert!(
                stderr.lines().count() == 1
                    && stderr.contains(&shown)
                    && stderr.contains(node.what()),
                "{rel} {node:?} {run:?}"
            );
            assert_eq!(listing(&dir.join("live")), live_before, "{rel} {run:?}");
        } else {
            let www = line_of(&run, "www");
            assert!(
                www.starts_with("www: FAILED: ")
                    && www.contains(&shown)
                    && www.contains(node.what()),
                "{rel} {node:?} {run:?}"
            );
            assert!(line_of(&run, "api").starts_with("api: renewed"), "{run:?}");
            let www_before: Vec<_> = live_before
                .iter()
                .filter(|(p, _)| p.contains("/live/www"))
                .cloned()
                .collect();
            let www_after: Vec<_> = listing(&dir.join("live"))
                .into_iter()
                .filter(|(p, _)| p.contains("/live/www"))
                .collect();
            assert_eq!(www_after, www_before, "{rel} {run:?}");
        }
        assert!(node.is_at(&path), "{rel} {node:?} was replaced: {run:?}");
    }
}

/// `CONFIG`-like, one certificate, with an alert webhook and a reload command.
fn with_reload(dir: &Dir, sink: &Sink, script: &str) {
    let reload = serde_json::to_string(&["sh", "-c", script]).unwrap();
    dir.config(&format!(
        "state_dir: state\n\
         issuers:\n  internal:\n    type: local-ca\n    validity: 90d\n\
         alerts:\n  - type: webhook\n    url: \"{}\"\n    on: [renewed, failed, rolled_back, rollback_failed]\n\
         certificates:\n  - name: www\n    domains: [www.example.test]\n    issuer: internal\n    \
         fullchain: live/www/fullchain.pem\n    privkey: live/www/privkey.pem\n    \
         reload: {{ command: {reload}, timeout: 10s }}\n",
        sink.url()
    ));
}

fn abs(dir: &Dir, rel: &str) -> PathBuf {
    dir.join(rel)
}

#[test]
fn a_reload_that_deletes_the_live_files_is_a_failure_with_that_cause() {
    let dir = Dir::new();
    dir.config(super::CONFIG);
    assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
    let (chain, key) = (
        abs(&dir, "live/www/fullchain.pem"),
        abs(&dir, "live/www/privkey.pem"),
    );
    let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
    with_reload(
        &dir,
        &sink,
        &format!("rm -f '{}' '{}'", chain.display(), key.display()),
    );
    let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let www = line_of(&run, "www");
    // The reload after the revert removed the restored pair too: someone must act.
    assert!(www.starts_with("www: ROLLBACK FAILED: "), "{run:?}");
    assert!(
        www.contains(&format!("after the reload, {} is gone", chain.display())),
        "{run:?}"
    );
    // The alert says the same.
    let got = sink.accepted();
    assert_eq!(got.len(), 1, "{:?}", sink.requests());
    let event = got[0].json.clone().unwrap();
    assert_eq!(event["event"], "rollback_failed", "{event}");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains(&format!("after the reload, {} is gone", chain.display())),
        "{event}"
    );
    // And check agrees that something is wrong.
    let check = bounded(&dir, "config.yaml", &["check"]);
    assert_eq!(check.code, 2, "{check:?}");
}

#[test]
fn a_reload_that_removes_state_dir_is_a_failure_and_no_new_root_is_minted() {
    let dir = Dir::new();
    dir.config(super::CONFIG);
    assert_eq!(bounded(&dir, "config.yaml", &["renew"]).code, 0);
    let state = abs(&dir, "state");
    // A backup of the local CA, as an operator keeps one.
    let backup: Vec<(String, Vec<u8>)> = ["root.pem", "root.key", "intermediate.pem"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(state.join("ca/internal").join(f)).unwrap(),
            )
        })
        .collect();
    let sink = Sink::start(Vendor::Webhook, None, Behaviour::Normal);
    with_reload(&dir, &sink, &format!("rm -rf '{}'", state.display()));
    let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let www = line_of(&run, "www");
    assert!(!www.contains("renewed"), "{run:?}");
    assert!(
        www.contains(&format!(
            "after the reload, state_dir {} is gone",
            state.display()
        )),
        "{run:?}"
    );
    assert!(!www.contains("kept as snapshot"), "{run:?}");
    let got = sink.accepted();
    assert_eq!(got.len(), 1, "{:?}", sink.requests());
    assert_ne!(got[0].json.as_ref().unwrap()["event"], "renewed");

    // The next pass does not mint a new root in place of the vanished one.
    dir.config(super::CONFIG);
    let live = std::fs::read(dir.join("live/www/fullchain.pem")).unwrap();
    let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    let www = line_of(&run, "www");
    let ca = state.join("ca/internal");
    assert!(
        www.starts_with("www: FAILED: ")
            && www.contains(&ca.display().to_string())
            && www.contains("restore"),
        "{run:?}"
    );
    assert!(
        !ca.join("root.pem").exists(),
        "a new root was made: {run:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("live/www/fullchain.pem")).unwrap(),
        live
    );
    // Restoring the CA from its backup is the way on: the same root issues again.
    std::fs::create_dir_all(&ca).unwrap();
    for (file, bytes) in &backup {
        std::fs::write(ca.join(file), bytes).unwrap();
    }
    let run = bounded(&dir, "config.yaml", &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read(ca.join("root.pem")).unwrap(), backup[0].1);
}
