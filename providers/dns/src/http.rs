//! What the providers that speak to an HTTP API share (feature `http`), so that each bound is
//! written once:
//!
//! - [`client_builder`]: the client's settings. It follows no redirect and sends no `Referer`:
//!   every request carries a credential (a bearer token, a signed AccessKey), and a redirect
//!   must never take it to another host.
//! - [`receive`]: reads an answer's body as it streams in, up to [`MAX_ANSWER`] bytes whatever
//!   its `Content-Length` says, and turns a 3xx into [`Error::Redirect`] naming the target's
//!   host only ([`redirect_host`]).
//! - [`Pager`]: the bounds of one listing (pages read, items on a page, items kept).
//! - [`within`]: one deadline for one operation, every request, retry and page included.

use std::future::Future;
use std::time::{Duration, SystemTime};

use reqwest::header::{LOCATION, RETRY_AFTER};

use crate::{Error, Operation};

/// The most read of one answer (as of a CA's answers): no answer of a DNS API comes near it.
pub const MAX_ANSWER: usize = 1 << 20;
/// The timeout of one HTTP request, its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of establishing one connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most one `present` or `cleanup` takes by default, every request, retry and page
/// included.
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(60);

/// The host a redirect's `Location` points to, resolved against the request's URL `from` (a
/// relative `Location` points to `from`'s own host), or `None` when there is no usable
/// `Location`. Only the host: a Location's path and query may hold anything, a credential
/// included. Every client that refuses redirects (providers, alerts, ACME) names the target
/// through this.
pub fn redirect_host(
    from: &reqwest::Url,
    location: Option<&reqwest::header::HeaderValue>,
) -> Option<String> {
    let location = location?.to_str().ok()?;
    from.join(location.trim())
        .ok()?
        .host_str()
        .map(str::to_owned)
}

/// A client builder with certkeeper's settings for a provider API: request and connect
/// timeouts, no redirects followed, no `Referer`, certkeeper's `User-Agent`.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")))
}

/// An answer, read within the bounds.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// `Retry-After` in seconds, when the answer has one.
    pub retry_after: Option<Duration>,
    /// The body: at most [`MAX_ANSWER`] bytes.
    pub body: Vec<u8>,
}

/// Why an answer could not be read.
#[derive(Debug)]
pub enum Failure {
    /// The connection failed or timed out while the body came in: worth another attempt.
    Transport(reqwest::Error),
    /// A redirect, or a body past [`MAX_ANSWER`]: final, never retried.
    Final(Error),
}

/// Reads the answer to `call` (`GET dns_records`, `DescribeDomains`: named in errors): a 3xx
/// is [`Error::Redirect`]; a body is read chunk by chunk and refused as soon as it passes
/// [`MAX_ANSWER`] (a `Content-Length` above it is refused before any byte is read; one below
/// it is not trusted).
pub async fn receive(call: &str, mut response: reqwest::Response) -> Result<Answer, Failure> {
    let status = response.status();
    if status.is_redirection() {
        let host = redirect_host(response.url(), response.headers().get(LOCATION));
        return Err(Failure::Final(Error::Redirect {
            status: status.as_u16(),
            host,
        }));
    }
    let too_large = || {
        Failure::Final(Error::AnswerTooLarge {
            call: call.to_owned(),
            limit: MAX_ANSWER,
        })
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER as u64)
    {
        return Err(too_large());
    }
    let retry_after = retry_after(response.headers().get(RETRY_AFTER), SystemTime::now());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::Transport)? {
        if chunk.len() > MAX_ANSWER - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// A `Retry-After` as the wait from `now`: delta-seconds or an HTTP date (RFC 9110 §10.2.3);
/// a date already past is no wait at all, and anything else is no `Retry-After`. How long a
/// caller honours it is its retry policy's business.
pub fn retry_after(
    value: Option<&reqwest::header::HeaderValue>,
    now: SystemTime,
) -> Option<Duration> {
    let value = value?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The bounds of one listing: at most `max_pages` pages, at most `per_page` items on each (as
/// asked), at most `max_items` items in all.
#[derive(Debug)]
pub struct Pager {
    call: &'static str,
    per_page: usize,
    max_pages: u32,
    max_items: usize,
    pages: u32,
    items: usize,
}

impl Pager {
    /// A listing through `call` asking `per_page` items a page.
    pub fn new(call: &'static str, per_page: usize, max_pages: u32, max_items: usize) -> Pager {
        Pager {
            call,
            per_page,
            max_pages,
            max_items,
            pages: 0,
            items: 0,
        }
    }

    /// The number (from 1) of the next page to ask for; an error when the listing would go
    /// past its pages.
    pub fn next_page(&mut self) -> Result<u32, Error> {
        if self.pages >= self.max_pages {
            return Err(Error::ListingTooLong {
                call: self.call.to_owned(),
                limit: format!("{} pages of {}", self.max_pages, self.per_page),
            });
        }
        self.pages += 1;
        Ok(self.pages)
    }

    /// Notes that the page just read holds `count` items; an error when that is more than
    /// asked for, or more than the listing keeps in all.
    pub fn read(&mut self, count: usize) -> Result<(), Error> {
        if count > self.per_page {
            return Err(Error::PageTooLong {
                call: self.call.to_owned(),
                count,
                per_page: self.per_page,
            });
        }
        self.items = self.items.saturating_add(count);
        if self.items > self.max_items {
            return Err(Error::ListingTooLong {
                call: self.call.to_owned(),
                limit: format!("{} items", self.max_items),
            });
        }
        Ok(())
    }
}

/// Runs `work` (one `operation`) for at most `deadline`; past it, the work is dropped and the
/// answer is [`Error::Deadline`].
pub async fn within<T>(
    deadline: Duration,
    operation: Operation,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Deadline {
            operation,
            deadline,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        use reqwest::header::HeaderValue;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_000);
        let read = |v: &'static str| retry_after(Some(&HeaderValue::from_static(v)), now);
        assert_eq!(read("30"), Some(Duration::from_secs(30)));
        assert_eq!(read(" 7 "), Some(Duration::from_secs(7)));
        // 480 s after `now`.
        assert_eq!(
            read("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::from_secs(480))
        );
        assert_eq!(read("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(read("soon"), None);
        assert_eq!(read("-5"), None);
        assert_eq!(retry_after(None, now), None);
    }

    #[test]
    fn a_pager_stops_at_its_bounds() {
        let mut p = Pager::new("GET dns_records", 100, 2, 150);
        assert_eq!(p.next_page().ok(), Some(1));
        assert!(p.read(100).is_ok());
        assert_eq!(p.next_page().ok(), Some(2));
        assert_eq!(
            p.read(60).map_err(|e| e.to_string()),
            Err(
                "GET dns_records goes on past 150 items; certkeeper reads no more of one \
                 listing"
                    .to_owned()
            )
        );
        assert_eq!(
            p.next_page().map_err(|e| e.to_string()),
            Err(
                "GET dns_records goes on past 2 pages of 100; certkeeper reads no more of \
                 one listing"
                    .to_owned()
            )
        );
        let mut p = Pager::new("DescribeDomains", 100, 10, 1000);
        assert_eq!(p.next_page().ok(), Some(1));
        assert_eq!(
            p.read(20_000).map_err(|e| e.to_string()),
            Err(
                "DescribeDomains answered 20000 items on a page of 100; the API pages no \
                 more than asked"
                    .to_owned()
            )
        );
    }

    #[tokio::test]
    async fn the_deadline_names_the_operation() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        };
        let err = within(Duration::from_millis(10), Operation::Cleanup, slow)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "removing the record did not finish within 0.01s (every request, retry and \
                 page included); the API is too slow or not answering"
            )
        );
    }
}
