//! The exec provider against the shared conformance suite, with a hook that keeps its
//! "zone" in a file: `present` appends `FQDN VALUE`, `cleanup` removes exactly that line,
//! and an injected transient failure exits 75 (EX_TEMPFAIL), as a hook whose API answered
//! 429 should.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use certkeeper_dns::testkit::conformance::{self, FakeZone};
use certkeeper_dns_exec::ExecProvider;

struct FileZone {
    dir: PathBuf,
}

impl FakeZone for FileZone {
    fn values(&self, fqdn: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("zone"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(name, _)| *name == fqdn)
            .map(|(_, v)| v.to_owned())
            .collect()
    }

    fn add_foreign(&self, fqdn: &str, value: &str) {
        let mut zone = std::fs::read_to_string(self.dir.join("zone")).unwrap_or_default();
        zone.push_str(&format!("{fqdn} {value}\n"));
        std::fs::write(self.dir.join("zone"), zone).expect("write zone");
    }

    fn fail_next(&self, n: usize) {
        std::fs::write(self.dir.join("fail"), n.to_string()).expect("write fail count");
    }
}

fn script(path: &Path, body: &str) -> String {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("write hook");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

#[tokio::test]
async fn the_exec_provider_passes_the_conformance_suite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let hook = script(
        &dir.join("hook.sh"),
        &format!(
            "d={d}\n\
             n=$(cat $d/fail 2>/dev/null || echo 0)\n\
             if [ \"$n\" -gt 0 ]; then echo $((n - 1)) > $d/fail; echo 'api answered 429' >&2; exit 75; fi\n\
             touch $d/zone\n\
             case \"$1\" in\n\
             present) echo \"$2 $3\" >> $d/zone ;;\n\
             cleanup) grep -vxF \"$2 $3\" $d/zone > $d/zone.new || true; mv $d/zone.new $d/zone ;;\n\
             esac\n",
            d = dir.display()
        ),
    );
    let refused = script(
        &dir.join("refused.sh"),
        "echo '401: the DNS API refused the token' >&2\nexit 1\n",
    );
    let provider = ExecProvider::new(vec![hook], Duration::from_secs(10)).expect("provider");
    let wrong = ExecProvider::new(vec![refused], Duration::from_secs(10)).expect("provider");
    let zone = FileZone {
        dir: dir.to_owned(),
    };
    conformance::run(
        &provider,
        &wrong,
        "401: the DNS API refused the token",
        &zone,
        "example.com",
    )
    .await;
}
