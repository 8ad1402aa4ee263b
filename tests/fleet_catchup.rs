//! Catching up with the fleet, with the binary against a real 3-member etcd and Pebble: a host
//! whose certificate's directory was emptied (a restored or rebuilt machine), or that comes
//! back with neither its live files nor its state_dir (a freshly provisioned host), deploys
//! the fleet's current generation from etcd and orders nothing.

use certkeeper_fleet::testing::Cluster;

use crate::acme::unique_label;
use crate::fleet_pass::{Host, orders};
use crate::util::pebble::Pebble;

/// Empties the directory `www`'s live files are in (the links, the generations and the
/// manifest certkeeper keeps beside them), leaving the directory itself.
fn empty_live_dir(host: &Host) {
    let dir = host.dir().join("live/www");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    assert!(host.live("fullchain.pem").is_none());
}

/// A pass on `host` deploys generation 1 from etcd (no new order), and `verify` is OK.
fn catches_up(host: &Host, pebble: &Pebble, leaf: &str, key: &[u8]) {
    let run = host.renew();
    assert_eq!(run.code, 0, "{}: {run:?}", host.id);
    assert!(
        run.stdout
            .contains("www: renewed from fleet generation 1 (issued by web1)"),
        "{}: {run:?}",
        host.id
    );
    assert_eq!(host.leaf(), leaf, "{}", host.id);
    assert_eq!(
        host.live("privkey.pem").as_deref(),
        Some(key),
        "{}",
        host.id
    );
    let verify = host.dir().run(&["verify", "www"]);
    assert_eq!(verify.code, 0, "{}: {verify:?}", host.id);
    assert_eq!(orders(pebble), 1, "no new order\n{}", pebble.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_restarted_with_an_empty_live_dir_gets_the_current_generation_without_a_new_order() {
    let pebble = Pebble::start().await;
    let cluster = Cluster::start(3);
    let fleet = unique_label("pool");
    let domain = format!("www.{}.certkeeper-test.example.com", unique_label("fleet"));
    let hosts: Vec<Host> = ["web1", "web2", "web3"]
        .iter()
        .map(|id| Host::new(&pebble, &cluster, &fleet, id, &domain))
        .collect();
    for h in &hosts {
        let run = h.renew();
        assert_eq!(run.code, 0, "{}: {run:?}\n{}", h.id, pebble.logs());
    }
    let leaf = hosts[0].leaf();
    let key = hosts[0].live("privkey.pem").unwrap();
    for h in &hosts {
        assert_eq!(h.leaf(), leaf, "{}", h.id);
    }
    assert_eq!(orders(&pebble), 1, "{}", pebble.logs());
    let web3 = &hosts[2];

    // The live directory emptied, state_dir kept (it remembers a pair that is gone).
    empty_live_dir(web3);
    catches_up(web3, &pebble, &leaf, &key);
    // Up to date now: the next pass changes nothing.
    let again = web3.renew();
    assert_eq!(again.code, 0, "{again:?}");
    assert!(!again.stdout.contains("renewed"), "{again:?}");
    assert_eq!(web3.leaf(), leaf);

    // A freshly provisioned host: no live files and no state_dir (no account, no record).
    empty_live_dir(web3);
    std::fs::remove_dir_all(web3.dir().join("state")).unwrap();
    catches_up(web3, &pebble, &leaf, &key);

    // The others were not disturbed.
    for h in &hosts[..2] {
        assert_eq!(h.leaf(), leaf, "{}", h.id);
    }
}
