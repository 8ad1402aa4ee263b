//! Mutation fuzzing of the parsers that read what others wrote: the config (YAML), PEM/DER
//! certificate files, private keys and manifests. From valid seeds, a fixed-seed generator
//! flips, inserts, deletes, repeats and splices bytes (and nests brackets), 10,000 cases per
//! parser by default (`FUZZ_CASES` for more). Every case must return, Ok or Err, without a
//! panic and within a bound that catches super-linear parsing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::fixtures::{LeafSpec, Pki};
use crate::util::{Rng, env_number};

/// The longest any single case may take (debug build, loaded machine): linear parsers of
/// inputs under 64 KiB take milliseconds; the nested-bracket case the config used to have
/// took over a minute at 100 KiB.
const CASE_BOUND: Duration = Duration::from_secs(2);

/// A mutation of `seed`.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len().max(1) as u64;
        let at = rng.below(len) as usize;
        match rng.below(7) {
            0 if !data.is_empty() => {
                let bit = 1u8 << rng.below(8);
                let i = at.min(data.len() - 1);
                data[i] ^= bit;
            }
            1 => data.insert(at.min(data.len()), rng.below(256) as u8),
            2 if !data.is_empty() => {
                let end = (at + 1 + rng.below(16) as usize).min(data.len());
                data.drain(at.min(data.len())..end);
            }
            3 => {
                // Repeat a chunk many times (long lines, many entries).
                let end = (at + 1 + rng.below(32) as usize).min(data.len());
                let chunk = data[at.min(data.len())..end].to_vec();
                let times = 1 + rng.below(200) as usize;
                for _ in 0..times {
                    data.splice(at..at, chunk.iter().copied());
                }
            }
            4 => {
                // Nesting: brackets, braces, dashes.
                let open = [b'[', b'{', b'-', b' '][rng.below(4) as usize];
                let times = 1 + rng.below(2000) as usize;
                data.splice(at..at, std::iter::repeat_n(open, times));
            }
            5 => {
                // A byte the format gives meaning to.
                let special = b":-#'\"\n\t*&!|>%@`\\=";
                let c = special[rng.below(special.len() as u64) as usize];
                data.insert(at.min(data.len()), c);
            }
            _ => data.truncate(at),
        }
        if data.len() > 64 * 1024 {
            data.truncate(64 * 1024);
        }
    }
    data
}

/// Runs `parse` on `cases` mutations of the seeds; panics with the input of a case that
/// panicked or took longer than [`CASE_BOUND`].
fn fuzz(name: &str, seeds: &[Vec<u8>], seed: u64, parse: impl Fn(&[u8])) {
    let cases = env_number("FUZZ_CASES", 10_000);
    let mut rng = Rng::new(seed);
    for case in 0..cases {
        let which = rng.below(seeds.len() as u64) as usize;
        let input = mutate(&mut rng, &seeds[which]);
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| parse(&input)));
        let took = started.elapsed();
        assert!(
            outcome.is_ok(),
            "{name}: case {case} panicked on {:?}",
            String::from_utf8_lossy(&input)
        );
        assert!(
            took < CASE_BOUND,
            "{name}: case {case} took {took:?} for {} bytes",
            input.len()
        );
    }
}

#[test]
fn the_config_parser_never_panics_and_stays_linear() {
    let seeds: Vec<Vec<u8>> = [
        "quickstart.yaml",
        "multi.yaml",
        "cloudflare.yaml",
        "aliyun.yaml",
    ]
    .iter()
    .map(|f| std::fs::read(Path::new("examples").join(f)).unwrap())
    .chain(std::iter::once(
        std::fs::read("deploy/config.example.yaml").unwrap(),
    ))
    .collect();
    fuzz("config", &seeds, 0x5eed_c0f1, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = certkeeper::config::Config::from_yaml(&text, Path::new("/fuzz/config.yaml"));
    });
}

#[test]
fn certificate_key_and_manifest_parsers_never_panic() {
    let pki = Pki::new("fuzz");
    let leaf = pki.leaf(LeafSpec::new(
        &["fuzz.example.test", "*.fuzz.example.test"],
        30,
    ));
    let pem = leaf.fullchain().into_bytes();
    let der = leaf.cert_der.clone();
    fuzz(
        "certificates",
        &[pem.clone(), der, pki.root_pem().into_bytes()],
        0x5eed_ce27,
        |input| {
            if let Ok((certs, _)) = certkeeper::x509::read_certificates(input) {
                for c in certs {
                    let _ = (c.subject.len(), c.sans.len(), c.self_issued());
                }
            }
        },
    );
    fuzz(
        "private keys",
        &[leaf.key_pem.clone().into_bytes()],
        0x5eed_4e75,
        |input| {
            let _ = certkeeper::x509::PrivateKey::from_bytes(input);
        },
    );
    let manifest = certkeeper::store::Manifest::describe(
        "www",
        &pem,
        leaf.key_pem.as_bytes(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    fuzz(
        "manifests",
        &[serde_json::to_vec_pretty(&manifest).unwrap()],
        0x5eed_3a41,
        |input| {
            let _ = serde_json::from_slice::<certkeeper::store::Manifest>(input);
        },
    );
}
