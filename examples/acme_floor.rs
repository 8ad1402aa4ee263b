//! The floor of one ACME issuance, for bench/floor.sh: the fewest steps instant-acme needs to
//! get one certificate from Pebble over DNS-01, with nothing around them (no config, no state,
//! no propagation check, no verification, no deploy). New account, new order for one name, the
//! TXT record set in pebble-challtestsrv through its HTTP API, challenge ready, poll, finalize
//! with an rcgen CSR, download the chain, remove the record. Prints the seconds it took (and
//! each step's end on stderr) and writes the chain and key to OUT when given.
//!
//! The HTTP client is instant-acme's hyper client with TCP_NODELAY set, as certkeeper's is:
//! instant-acme's default client leaves Nagle's algorithm on, and every signed POST (headers,
//! then body) then waits for Pebble's delayed ACK, about 40 ms a request.
//!
//! Usage: acme_floor DIRECTORY_URL HTTPS_CA_PEM CHALLTESTSRV_URL NAME [OUT]

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use anyhow::{Context, bail};
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [directory, https_ca, challtestsrv, name, rest @ ..] = args.as_slice() else {
        eprintln!("usage: acme_floor DIRECTORY_URL HTTPS_CA_PEM CHALLTESTSRV_URL NAME [OUT]");
        std::process::exit(2);
    };
    // Several rustls providers are compiled in; pick the one certkeeper uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let started = Instant::now();
    // Each step's end, printed on stderr.
    let step = |what: &str| eprintln!("{:>8.3} s  {what}", started.elapsed().as_secs_f64());
    let dns = reqwest::Client::new();
    // Pebble answers within milliseconds; poll often rather than instant-acme's 250 ms start.
    let poll = RetryPolicy::new()
        .initial_delay(Duration::from_millis(10))
        .backoff(1.5)
        .timeout(Duration::from_secs(30));

    let (account, _credentials) = Account::builder_with_http(Box::new(http_client(https_ca)?))
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.clone(),
            None,
        )
        .await
        .context("new account")?;
    step("account created");
    let identifiers = [Identifier::Dns(name.clone())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("new order")?;
    step("order placed");

    let record = format!("_acme-challenge.{name}.");
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.context("authorization")?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => bail!("authorization is {status:?}"),
        }
        let mut challenge = authz
            .challenge(ChallengeType::Dns01)
            .context("no dns-01 challenge offered")?;
        let value = challenge.key_authorization().dns_value();
        dns.post(format!("{challtestsrv}/set-txt"))
            .json(&serde_json::json!({ "host": record, "value": value }))
            .send()
            .await?
            .error_for_status()
            .context("set-txt")?;
        step("record set");
        challenge.set_ready().await.context("challenge ready")?;
        step("challenge ready");
    }

    let status = order.poll_ready(&poll).await.context("poll order")?;
    if status != OrderStatus::Ready {
        bail!("order is {status:?}, not ready");
    }
    step("order ready");
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.clone()])?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await.context("finalize")?;
    step("finalized");
    let chain = order
        .poll_certificate(&poll)
        .await
        .context("download the chain")?;
    step("chain downloaded");
    dns.post(format!("{challtestsrv}/clear-txt"))
        .json(&serde_json::json!({ "host": record }))
        .send()
        .await?
        .error_for_status()
        .context("clear-txt")?;
    let elapsed = started.elapsed().as_secs_f64();

    let certs = chain.matches("-----BEGIN CERTIFICATE-----").count();
    if certs == 0 {
        bail!("the CA returned no certificate");
    }
    if let Some(out) = rest.first() {
        std::fs::write(out, format!("{chain}{}", key.serialize_pem()))?;
    }
    println!("floor: {name} issued in {elapsed:.3} s ({certs} certificates in the chain)");
    Ok(())
}

/// HTTPS only, trusting `ca_pem` (Pebble's HTTPS CA), HTTP/1.1 and HTTP/2, TCP_NODELAY.
fn http_client(
    ca_pem: &str,
) -> anyhow::Result<HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)? {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(HyperClient::builder(TokioExecutor::new()).build(https))
}
