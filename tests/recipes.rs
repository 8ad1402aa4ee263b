//! The README's recipes, run against the real servers from Debian (HAProxy, Apache, Postfix):
//! the certkeeper YAML and the server configuration are read out of README.md (between the
//! `<!-- recipe NAME: ... -->` markers), so that what the README shows is what was run. The
//! test changes only what the README says it changes: `/etc/` moves under a temporary
//! directory, ports 443 and 25 become free ports, and `systemctl reload UNIT` becomes what
//! Debian's unit runs for it. The server starts on a certificate it already serves; certkeeper
//! takes it over, renews it on the local CA, reloads, verifies, and the server serves the new
//! leaf.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::util::Dir;
use crate::util::fixtures::{LeafSpec, Pki};
use crate::util::pebble::free_tcp_port;
use crate::util::servers::{Server, served_fingerprint};

/// The fenced block that follows `<!-- recipe NAME: PART -->` in README.md.
pub(crate) fn readme_block(name: &str, part: &str) -> String {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let marker = format!("<!-- recipe {name}: {part} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))..];
    let mut lines = after.lines().skip_while(|l| !l.starts_with("```")).skip(1);
    let mut out = String::new();
    for line in lines.by_ref() {
        if line.starts_with("```") {
            return out;
        }
        out.push_str(line);
        out.push('\n');
    }
    panic!("the block after {marker} is not closed");
}

/// A recipe's text as the test runs it (see the module doc).
fn adapt(text: &str, root: &Path, port: u16, unit: &str, reload: &[String]) -> String {
    let argv = format!(
        "[{}]",
        reload
            .iter()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect::<Vec<_>>()
            .join(", ")
    );
    text.replace("/etc/", &format!("{}/etc/", root.display()))
        .replace("127.0.0.1:443", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:25", &format!("127.0.0.1:{port}"))
        .replace(&format!("[\"systemctl\", \"reload\", \"{unit}\"]"), &argv)
}

/// The certificate the server serves before certkeeper takes over: plain files at the
/// recipe's paths (`files`: which of fullchain, privkey, cert, chain, combined it names).
fn bootstrap(dir: &Dir, domain: &str, files: &[(&str, &str)]) -> String {
    let pki = Pki::new("Before");
    let leaf = pki.leaf(LeafSpec::new(&[domain], 60));
    for (kind, rel) in files {
        let content = match *kind {
            "fullchain" => leaf.fullchain(),
            "privkey" => leaf.key_pem.clone(),
            "cert" => leaf.cert_pem.clone(),
            "chain" => leaf.intermediate_pem.clone(),
            "combined" => format!("{}{}", leaf.fullchain(), leaf.key_pem),
            other => panic!("{other}"),
        };
        dir.write(rel, content);
    }
    certkeeper::x509::read_certificates(leaf.fullchain().as_bytes())
        .unwrap()
        .0[0]
        .fingerprint
        .clone()
}

/// Writes the config (a local CA named `internal`, then the recipe's YAML).
fn write_config(dir: &Dir, yaml: &str) {
    dir.config(&format!(
        "state_dir: state\nissuers:\n  internal:\n    type: local-ca\n    validity: 90d\n{yaml}"
    ));
}

fn live_fingerprint(dir: &Dir) -> String {
    let (code, list) = dir.check_json();
    assert_eq!(code, 0, "{list:?}");
    let v: &Value = &list[0];
    v["fingerprint"].as_str().unwrap().to_owned()
}

/// Renews twice with `--force` and checks each time that the server serves the new leaf and
/// that `verify` is OK.
fn renew_and_check_served(
    dir: &Dir,
    server: &Server,
    name: &str,
    port: u16,
    sni: &str,
    starttls: Option<&str>,
    before: &str,
) {
    assert_eq!(served_fingerprint(port, sni, starttls), before);
    let mut previous = before.to_owned();
    for _ in 0..2 {
        let run = dir.run(&["renew", "--force"]);
        assert_eq!(run.code, 0, "{run:?}\n{}", server.log());
        let live = live_fingerprint(dir);
        assert_ne!(live, previous);
        assert_eq!(
            served_fingerprint(port, sni, starttls),
            live,
            "{}",
            server.log()
        );
        let run = dir.run(&["verify", name]);
        assert_eq!(run.code, 0, "{run:?}");
        previous = live;
    }
}

#[test]
fn haproxy_serves_the_renewed_combined_file() {
    let dir = Dir::new();
    let port = free_tcp_port();
    let yaml_text = readme_block("haproxy", "certkeeper");
    let server_text = readme_block("haproxy", "server");
    let before = bootstrap(
        &dir,
        "www.example.com",
        &[
            ("fullchain", "etc/ssl/www/fullchain.pem"),
            ("privkey", "etc/ssl/www/privkey.pem"),
            ("combined", "etc/haproxy/certs/www.pem"),
        ],
    );
    let cfg = dir.write(
        "haproxy.cfg",
        format!(
            "global\n    log stdout format raw local0\n\
             defaults\n    mode http\n    timeout connect 5s\n    timeout client 5s\n    timeout server 5s\n\n{}",
            adapt(&server_text, dir.path(), port, "haproxy", &[])
        ),
    );
    let argv: Vec<String> = ["/usr/sbin/haproxy", "-W", "-db", "-f"]
        .iter()
        .map(|s| s.to_string())
        .chain([cfg.display().to_string()])
        .collect();
    let server = Server::start("haproxy", "haproxy", &argv, &dir.join("haproxy.log"), port);
    // What Debian's unit runs for `systemctl reload haproxy`: SIGUSR2 to the master.
    let reload = [
        "/bin/kill".to_owned(),
        "-USR2".to_owned(),
        server.pid().to_string(),
    ];
    write_config(
        &dir,
        &adapt(&yaml_text, dir.path(), port, "haproxy", &reload),
    );
    renew_and_check_served(&dir, &server, "www", port, "www.example.com", None, &before);
}

#[test]
fn apache_serves_the_renewed_fullchain() {
    let dir = Dir::new();
    let port = free_tcp_port();
    let yaml_text = readme_block("apache", "certkeeper");
    let server_text = readme_block("apache", "server");
    let before = bootstrap(
        &dir,
        "www.example.com",
        &[
            ("fullchain", "etc/ssl/www/fullchain.pem"),
            ("privkey", "etc/ssl/www/privkey.pem"),
        ],
    );
    let root = dir.join("apache");
    fs::create_dir_all(&root).unwrap();
    let modules = "/usr/lib/apache2/modules";
    let conf = dir.write(
        "apache/httpd.conf",
        format!(
            "ServerRoot \"{root}\"\nServerName localhost\nListen 127.0.0.1:{port}\n\
             PidFile {root}/httpd.pid\nErrorLog {root}/error.log\nDefaultRuntimeDir {root}\n\
             Mutex file:{root} default\n\
             LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
             LoadModule authz_core_module {modules}/mod_authz_core.so\n\
             LoadModule socache_shmcb_module {modules}/mod_socache_shmcb.so\n\
             LoadModule ssl_module {modules}/mod_ssl.so\n\
             User www-data\nGroup www-data\n\n{}",
            adapt(&server_text, dir.path(), port, "apache2", &[]),
            root = root.display(),
        ),
    );
    let argv: Vec<String> = vec![
        "/usr/sbin/apache2".into(),
        "-f".into(),
        conf.display().to_string(),
        "-DFOREGROUND".into(),
    ];
    let server = Server::start("apache2", "apache2", &argv, &dir.join("apache.log"), port);
    // What Debian's unit runs for `systemctl reload apache2` (`apachectl graceful`): SIGUSR1
    // to the parent.
    let reload = [
        "/bin/kill".to_owned(),
        "-USR1".to_owned(),
        server.pid().to_string(),
    ];
    write_config(
        &dir,
        &adapt(&yaml_text, dir.path(), port, "apache2", &reload),
    );
    renew_and_check_served(&dir, &server, "www", port, "www.example.com", None, &before);
}

#[test]
fn postfix_serves_the_renewed_cert_and_chain_over_starttls() {
    let dir = Dir::new();
    let port = free_tcp_port();
    let yaml_text = readme_block("postfix", "certkeeper");
    let server_text = readme_block("postfix", "server");
    let before = bootstrap(
        &dir,
        "mail.example.com",
        &[
            ("fullchain", "etc/ssl/mail/fullchain.pem"),
            ("privkey", "etc/ssl/mail/privkey.pem"),
            ("cert", "etc/ssl/mail/cert.pem"),
            ("chain", "etc/ssl/mail/chain.pem"),
        ],
    );
    // Postfix's own processes run as `postfix`: they need a way into the test directory and
    // a data directory of their own.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.join("postfix");
    for sub in ["postfix", "postfix/queue", "postfix/data"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let chown = std::process::Command::new("chown")
        .arg("postfix")
        .arg(dir.join("postfix/data"))
        .status()
        .expect("chown");
    assert!(
        chown.success(),
        "the user `postfix` is missing: install the Debian package `postfix`"
    );
    dir.write(
        "postfix/main.cf",
        format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\n\
             mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\nmyhostname = mail.example.com\nmydestination =\n\
             maillog_file = /dev/stdout\n{}",
            adapt(&server_text, dir.path(), port, "postfix", &[]),
            q = dir.join("postfix/queue").display(),
            d = dir.join("postfix/data").display(),
        ),
    );
    let services = [
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "tlsmgr unix - - n 1000? 1 tlsmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "local unix - n n - - local",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ];
    dir.write(
        "postfix/master.cf",
        format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n{}\n",
            services.join("\n")
        ),
    );
    let argv: Vec<String> = vec![
        "/usr/sbin/postfix".into(),
        "-c".into(),
        conf.display().to_string(),
        "start-fg".into(),
    ];
    let server = Server::start("postfix", "postfix", &argv, &dir.join("postfix.log"), port)
        .stopped_by(
            vec![
                "/usr/sbin/postfix".into(),
                "-c".into(),
                conf.display().to_string(),
                "stop".into(),
            ],
            dir.join("postfix/queue/pid/master.pid"),
        );
    // What Debian's unit runs for `systemctl reload postfix`: `postfix reload` (of this
    // instance's configuration).
    let reload = [
        "/usr/sbin/postfix".to_owned(),
        "-c".to_owned(),
        conf.display().to_string(),
        "reload".to_owned(),
    ];
    write_config(
        &dir,
        &adapt(&yaml_text, dir.path(), port, "postfix", &reload),
    );
    renew_and_check_served(
        &dir,
        &server,
        "mail",
        port,
        "mail.example.com",
        Some("smtp"),
        &before,
    );
    // The files Postfix reads follow the pair.
    let fullchain = fs::read(dir.join("etc/ssl/mail/fullchain.pem")).unwrap();
    let cert = fs::read(dir.join("etc/ssl/mail/cert.pem")).unwrap();
    let chain = fs::read(dir.join("etc/ssl/mail/chain.pem")).unwrap();
    let ders = |b: &[u8]| -> Vec<Vec<u8>> {
        certkeeper::x509::read_certificates(b)
            .map(|(c, _)| c.into_iter().map(|c| c.der).collect())
            .unwrap_or_default()
    };
    assert_eq!([ders(&cert), ders(&chain)].concat(), ders(&fullchain));
}
