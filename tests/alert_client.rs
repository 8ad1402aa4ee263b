//! The alert client shares the HTTP settings of certkeeper's other clients that carry a
//! secret (no redirects, no Referer, certkeeper's User-Agent) and reads `Retry-After` as
//! they do: as seconds or as an HTTP date.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use certkeeper_dns::testkit::http::{Request, Response, Server};

use crate::util::Dir;

/// A vendor answering the first request 429 with `Retry-After` as an HTTP date three seconds
/// ahead, then 200: the second attempt comes no sooner than the date (the backoff alone
/// would have come back within half a second).
#[test]
fn an_alert_waits_for_a_retry_after_given_as_a_date() {
    let seen: Arc<Mutex<Vec<(Instant, Request)>>> = Arc::default();
    let s = seen.clone();
    let server = Server::start(move |req: &Request| {
        let n = {
            let mut seen = s.lock().unwrap();
            seen.push((Instant::now(), req.clone()));
            seen.len()
        };
        if n == 1 {
            let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
            return Response::json(429, &serde_json::json!({"error": "slow down"}))
                .with_header("Retry-After", &date);
        }
        Response::json(200, &serde_json::json!({"ok": true}))
    });
    let dir = Dir::new();
    dir.config(&format!(
        "state_dir: state\n\
         certificates: []\n\
         alerts:\n  - type: webhook\n    url: {}/hook\n",
        server.url()
    ));
    let run = dir.run(&["alert", "test"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("delivered"), "{run:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{run:?}");
    // The date has whole seconds: at least 2 of the 3 asked.
    let waited = seen[1].0.duration_since(seen[0].0);
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    for (_, req) in seen.iter() {
        let agent = req.header("user-agent").unwrap_or_default();
        assert!(agent.starts_with("certkeeper/"), "{agent}");
        assert_eq!(req.header("referer"), None);
    }
}
