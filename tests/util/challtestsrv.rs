//! A [`DnsProvider`] backed by pebble-challtestsrv's management API, so that the real DNS-01
//! path (record name, CNAME following, propagation check, cleanup) runs against real DNS
//! answers in tests.
//!
//! `/set-txt` adds a value under a name and `/clear-txt` removes all of them, so removing one
//! value is: clear the name, then add the others back. The provider also keeps what it
//! believes is live, so tests can check that every record was removed.

use std::collections::BTreeMap;

use async_trait::async_trait;
use certkeeper_dns::{DnsProvider, Error, RecordHandle, TxtRecord};
use tokio::sync::Mutex;

/// challtestsrv as a DNS provider.
#[derive(Debug)]
pub struct ChallTestSrv {
    base: String,
    client: reqwest::Client,
    /// What `present` created and `cleanup` has not removed yet, by name.
    live: Mutex<BTreeMap<String, Vec<String>>>,
    /// Every call, as `present NAME` / `cleanup NAME`.
    calls: std::sync::Mutex<Vec<String>>,
    /// When false, `present` reports success but publishes nothing (a provider writing to
    /// the wrong zone).
    publish: bool,
}

impl ChallTestSrv {
    /// A provider talking to challtestsrv's management API at `base`.
    pub fn new(base: &str) -> ChallTestSrv {
        ChallTestSrv {
            base: base.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            live: Mutex::default(),
            calls: std::sync::Mutex::default(),
            publish: true,
        }
    }

    /// A provider that says yes and publishes nothing.
    pub fn not_publishing(base: &str) -> ChallTestSrv {
        ChallTestSrv {
            publish: false,
            ..Self::new(base)
        }
    }

    /// Records created and not yet removed.
    pub async fn live(&self) -> BTreeMap<String, Vec<String>> {
        self.live.lock().await.clone()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls").clone()
    }

    /// Adds a CNAME in challtestsrv (test setup, not part of the provider).
    pub async fn set_cname(&self, host: &str, target: &str) {
        self.post(
            "set-cname",
            serde_json::json!({ "host": host, "target": target }),
        )
        .await
        .expect("set-cname");
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<(), Error> {
        let rsp = self
            .client
            .post(format!("{}/{path}", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        let status = rsp.status();
        if !status.is_success() {
            return Err(Error::Api {
                status: status.as_u16(),
                message: rsp.text().await.unwrap_or_default(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl DnsProvider for ChallTestSrv {
    async fn present(&self, record: &TxtRecord) -> Result<RecordHandle, Error> {
        self.calls
            .lock()
            .expect("calls")
            .push(format!("present {}", record.fqdn));
        let mut live = self.live.lock().await;
        if self.publish {
            self.post(
                "set-txt",
                serde_json::json!({ "host": record.fqdn, "value": record.value }),
            )
            .await?;
        }
        live.entry(record.fqdn.clone())
            .or_default()
            .push(record.value.clone());
        Ok(RecordHandle {
            record: record.clone(),
            id: None,
            zone: None,
        })
    }

    async fn cleanup(&self, handle: &RecordHandle) -> Result<(), Error> {
        let record = &handle.record;
        self.calls
            .lock()
            .expect("calls")
            .push(format!("cleanup {}", record.fqdn));
        let mut live = self.live.lock().await;
        let values = live.entry(record.fqdn.clone()).or_default();
        values.retain(|v| v != &record.value);
        let others = values.clone();
        if others.is_empty() {
            live.remove(&record.fqdn);
        }
        if self.publish {
            self.post("clear-txt", serde_json::json!({ "host": record.fqdn }))
                .await?;
            for value in others {
                self.post(
                    "set-txt",
                    serde_json::json!({ "host": record.fqdn, "value": value }),
                )
                .await?;
            }
        }
        Ok(())
    }
}
