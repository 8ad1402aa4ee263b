//! Certificate pairs made at test time, a pool
//! to tell which pair a file belongs to, child processes re-executed from this binary, and
//! a tmpfs mount for tests that need a second file system.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use rcgen::PublicKeyData;

/// A certificate (as a one-element fullchain) and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Pair {
    pub fullchain: Vec<u8>,
    pub privkey: Vec<u8>,
}

impl Pair {
    /// A fresh self-signed leaf for `a.test` with a new P-256 key.
    pub fn generate() -> Pair {
        let ck = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).expect("rcgen");
        Pair {
            fullchain: ck.cert.pem().into_bytes(),
            privkey: ck.signing_key.serialize_pem().into_bytes(),
        }
    }

    /// This pair with `extra` bytes of further PEM after the leaf, to make a big file.
    pub fn padded(&self, extra: usize) -> Pair {
        let mut fullchain = self.fullchain.clone();
        while fullchain.len() < self.fullchain.len() + extra {
            fullchain.extend_from_slice(&self.fullchain);
        }
        Pair {
            fullchain,
            privkey: self.privkey.clone(),
        }
    }

    pub fn write_to(&self, dir: &Path, stem: &str) {
        fs::write(dir.join(format!("{stem}.chain")), &self.fullchain).expect("write chain");
        fs::write(dir.join(format!("{stem}.key")), &self.privkey).expect("write key");
    }

    pub fn read_from(dir: &Path, stem: &str) -> Pair {
        Pair {
            fullchain: fs::read(dir.join(format!("{stem}.chain"))).expect("read chain"),
            privkey: fs::read(dir.join(format!("{stem}.key"))).expect("read key"),
        }
    }

    pub fn fingerprint(&self) -> String {
        certkeeper::store::manifest::leaf_identity(&self.fullchain)
            .expect("leaf")
            .fingerprint
    }
}

/// Whether the private key in `privkey` belongs to the leaf (first certificate) of
/// `fullchain`: the leaf's SubjectPublicKeyInfo equals the key's.
pub fn key_matches_leaf(fullchain: &[u8], privkey: &[u8]) -> bool {
    let Some(Ok(pem)) = x509_parser::pem::Pem::iter_from_buffer(fullchain).next() else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok(key) = std::str::from_utf8(privkey)
        .map_err(|_| ())
        .and_then(|k| rcgen::KeyPair::from_pem(k).map_err(|_| ()))
    else {
        return false;
    };
    cert.public_key().raw == key.subject_public_key_info().as_slice()
}

/// Distinct pairs, and a lookup from a file's SHA-256 to the pair it belongs to.
pub struct Pool {
    pub pairs: Vec<Pair>,
}

impl Pool {
    pub fn new(n: usize) -> Pool {
        Pool::from_pairs((0..n).map(|_| Pair::generate()).collect())
    }

    pub fn from_pairs(pairs: Vec<Pair>) -> Pool {
        for (i, p) in pairs.iter().enumerate() {
            assert!(
                key_matches_leaf(&p.fullchain, &p.privkey),
                "generated pair {i} must match"
            );
        }
        Pool { pairs }
    }

    pub fn save(&self, dir: &Path) {
        fs::create_dir_all(dir).expect("pool dir");
        for (i, p) in self.pairs.iter().enumerate() {
            p.write_to(dir, &i.to_string());
        }
    }

    pub fn load(dir: &Path) -> Pool {
        let mut pairs = Vec::new();
        while dir.join(format!("{}.chain", pairs.len())).exists() {
            pairs.push(Pair::read_from(dir, &pairs.len().to_string()));
        }
        Pool::from_pairs(pairs)
    }

    /// Which pair these bytes are a file of (exact comparison: cheap enough for readers
    /// in a tight loop).
    pub fn which(&self, bytes: &[u8]) -> Option<usize> {
        self.pairs
            .iter()
            .position(|p| p.fullchain == bytes || p.privkey == bytes)
    }
}

/// The command that runs one test of this binary in a child process.
pub fn child_test(test: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    cmd
}

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmpfs mounted on a directory, unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on `path`; `None` when this
    /// process may not mount.
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Entries of `dir` whose names start with `.certkeeper`, sorted.
pub fn certkeeper_entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .expect("list dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".certkeeper"))
        .collect();
    out.sort();
    out
}

/// Mode bits of a file (following symlinks).
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").mode() & 0o7777
}

/// A small deterministic random number generator (xorshift64*), so kill moments vary
/// but a failing run can be repeated from its printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// An environment variable parsed as a number, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
