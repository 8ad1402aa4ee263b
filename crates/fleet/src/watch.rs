//! Watches on etcd keys that survive a broken link: they resume from the last revision seen.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Generation, Result, from_json, timed};

/// New generations of one certificate, in order, each with its revision. Dropping it ends
/// the watch.
pub struct CurrentWatch {
    rx: mpsc::Receiver<Result<(Generation, i64)>>,
    task: JoinHandle<()>,
}

impl CurrentWatch {
    pub(crate) fn start(
        client: Client,
        key: String,
        after: Option<i64>,
        timeout: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(run(client, key, after.unwrap_or(0), tx, timeout));
        Self { rx, task }
    }

    /// The next generation published (or a record that could not be read, naming its key).
    /// Waits as long as it takes, across lost links; `None` only if the watch task ended.
    pub async fn next(&mut self) -> Option<Result<(Generation, i64)>> {
        self.rx.recv().await
    }
}

impl Drop for CurrentWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    client: Client,
    key: String,
    mut last: i64,
    tx: mpsc::Sender<Result<(Generation, i64)>>,
    timeout: Duration,
) {
    let mut pause = RETRY_MIN;
    loop {
        let mut c = client.clone();
        let mut options = WatchOptions::new();
        if last > 0 {
            options = options.with_start_revision(last + 1);
        }
        if let Ok(mut stream) = timed("watch", timeout, c.watch(key.as_str(), Some(options))).await
        {
            while let Ok(Some(resp)) = stream.message().await {
                pause = RETRY_MIN;
                if resp.created() && last == 0 {
                    last = resp.header().map_or(0, |h| h.revision());
                }
                if resp.compact_revision() > 0 {
                    // The history after `last` is gone: read the current value instead.
                    let mut c = client.clone();
                    if let Ok(got) = timed("read", timeout, c.get(key.as_str(), None)).await {
                        if let Some(kv) = got.kvs().first().filter(|kv| kv.mod_revision() > last) {
                            let item = from_json(&key, kv.value()).map(|g| (g, kv.mod_revision()));
                            if tx.send(item).await.is_err() {
                                return;
                            }
                        }
                        last = got.header().map_or(last, |h| h.revision());
                    }
                    break;
                }
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    last = last.max(kv.mod_revision());
                    if event.event_type() != EventType::Put {
                        continue;
                    }
                    let item =
                        from_json::<Generation>(&key, kv.value()).map(|g| (g, kv.mod_revision()));
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                if resp.canceled() {
                    break;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Waits until `key` is deleted, or at most `bound` (the caller then looks again).
pub(crate) async fn until_deleted(client: &Client, key: &str, bound: Duration) {
    let mut c = client.clone();
    let wait = async {
        let Ok(mut stream) = c.watch(key, None).await else {
            return;
        };
        while let Ok(Some(resp)) = stream.message().await {
            if resp.canceled()
                || resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
            {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(bound, wait).await;
}

const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
