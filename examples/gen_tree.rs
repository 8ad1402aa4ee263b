//! Generates a tree of certificates for the `check` benchmark (bench/check.sh): a root, an
//! intermediate, and N leaf+intermediate fullchains with keys, laid out three ways (a tree
//! for certkeeper's `discover.paths`, lego's `certificates/` folder, certbot's lineages).
//!
//! Usage: gen_tree DIR N

use std::fs;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: gen_tree DIR N");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    let n: usize = n.parse()?;
    let now = OffsetDateTime::now_utc();
    let root = CertifiedIssuer::self_signed(ca("Bench Root", now), key()?)?;
    let inter = CertifiedIssuer::signed_by(ca("Bench Intermediate", now), key()?, &root)?;
    fs::create_dir_all(dir)?;
    fs::write(dir.join("root.pem"), root.pem())?;
    for i in 0..n {
        let name = format!("host{i:05}.bench.test");
        let leaf_key = key()?;
        let mut params = CertificateParams::new(vec![name.clone()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name.clone());
        params.distinguished_name = dn;
        params.not_before = now - Duration::days(10);
        // A spread of expiry dates: some due, most not.
        params.not_after = now + Duration::days(5 + (i % 80) as i64);
        params.is_ca = IsCa::NoCa;
        let leaf = params.signed_by(&leaf_key, &inter)?;
        let (cert, chain, keypem) = (leaf.pem(), inter.pem(), leaf_key.serialize_pem());
        let fullchain = format!("{cert}{chain}");

        let tree = dir.join("tree").join(format!("{:03}", i / 100)).join(&name);
        fs::create_dir_all(&tree)?;
        fs::write(tree.join("fullchain.pem"), &fullchain)?;
        fs::write(tree.join("privkey.pem"), &keypem)?;

        let lego = dir.join("lego").join("certificates");
        fs::create_dir_all(&lego)?;
        fs::write(lego.join(format!("{name}.crt")), &fullchain)?;
        fs::write(lego.join(format!("{name}.issuer.crt")), &chain)?;
        fs::write(lego.join(format!("{name}.key")), &keypem)?;
        fs::write(
            lego.join(format!("{name}.json")),
            format!("{{\"domain\":\"{name}\",\"certUrl\":\"\",\"certStableUrl\":\"\"}}"),
        )?;

        let cb = dir.join("certbot");
        let archive = cb.join("archive").join(&name);
        let live = cb.join("live").join(&name);
        fs::create_dir_all(&archive)?;
        fs::create_dir_all(&live)?;
        fs::create_dir_all(cb.join("renewal"))?;
        for (file, body) in [
            ("cert", &cert),
            ("chain", &chain),
            ("fullchain", &fullchain),
            ("privkey", &keypem),
        ] {
            fs::write(archive.join(format!("{file}1.pem")), body)?;
            let link = live.join(format!("{file}.pem"));
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(archive.join(format!("{file}1.pem")), link)?;
        }
        let l = live.display();
        fs::write(
            cb.join("renewal").join(format!("{name}.conf")),
            format!(
                "version = 2.1.0\narchive_dir = {}\ncert = {l}/cert.pem\nprivkey = {l}/privkey.pem\n\
                 chain = {l}/chain.pem\nfullchain = {l}/fullchain.pem\n\n[renewalparams]\n\
                 authenticator = standalone\nserver = https://acme-v02.api.letsencrypt.org/directory\n",
                archive.display()
            ),
        )?;
    }
    fs::write(
        dir.join("config.yaml"),
        "state_dir: state\nissuers:\n  bench:\n    type: acme\n    directory: https://127.0.0.1:14000/dir\n    \
         trust_roots: root.pem\ncertificates: []\ndiscover:\n  paths: [tree]\n",
    )?;
    Ok(())
}

fn key() -> Result<KeyPair> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

fn ca(cn: &str, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::days(365);
    params.not_after = now + Duration::days(3650);
    params
}
