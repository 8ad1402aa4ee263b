//! A small HTTP/1.1 server for fake provider APIs in tests: one thread per connection, a
//! handler closure per request, `Connection: close` on every answer. Requests are parsed
//! with `Content-Length` or chunked bodies; query strings and form bodies are
//! percent-decoded for the handler.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A parsed request.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as sent (path and query, not decoded).
    pub target: String,
    /// The path, without the query.
    pub path: String,
    /// The query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body as received.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as `application/x-www-form-urlencoded` pairs, percent-decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_pairs(&String::from_utf8_lossy(&self.body))
    }

    /// The body as JSON, when it parses.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// An answer.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// The handler of a [`Server`].
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A server on a free 127.0.0.1 port; stopped and joined when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving `handler`.
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
        let handler: Handler = Arc::new(handler);
        Server::spawn(move |stream| serve(stream, &handler))
    }

    /// Starts serving `handler`, which writes the whole answer itself on the connection:
    /// for hostile answers (a body that never ends, a lying `Content-Length`, a trickle).
    /// See [`write_head`] and [`write_endless`].
    pub fn start_raw(handler: impl Fn(&Request, &mut TcpStream) + Send + Sync + 'static) -> Server {
        Server::spawn(move |mut stream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            if let Ok(Some(request)) = read_request(&stream) {
                handler(&request, &mut stream);
            }
        })
    }

    fn spawn(connection: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let connection = Arc::new(connection);
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let connection = connection.clone();
                std::thread::spawn(move || connection(stream));
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblocks accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let response = match read_request(&stream) {
        Ok(Some(request)) => handler(&request),
        Ok(None) => return,
        Err(status) => Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        },
    };
    let _ = write_response(&stream, &response);
}

fn read_request(stream: &TcpStream) -> Result<Option<Request>, u16> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(400);
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return Ok(None);
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').ok_or(400u16)?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        let mut w: &TcpStream = reader.get_ref();
        let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let body = if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return Ok(None);
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| 400u16)?;
            if size == 0 {
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break body;
            }
            if body.len() + size > MAX_BODY {
                return Err(413);
            }
            let start = body.len();
            body.resize(start + size, 0);
            let mut crlf = [0; 2];
            if reader.read_exact(&mut body[start..]).is_err()
                || reader.read_exact(&mut crlf).is_err()
            {
                return Ok(None);
            }
        }
    } else {
        let n: usize = header("content-length")
            .map(|l| l.parse().map_err(|_| 400u16))
            .transpose()?
            .unwrap_or(0);
        if n > MAX_BODY {
            return Err(413);
        }
        let mut body = vec![0; n];
        if reader.read_exact(&mut body).is_err() {
            return Ok(None);
        }
        body
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), parse_pairs(q)),
        None => (target.clone(), Vec::new()),
    };
    Ok(Some(Request {
        method,
        target,
        path,
        query,
        headers,
        body,
    }))
}

fn write_response(mut stream: &TcpStream, r: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\n", r.status);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    // A 204 carries neither a body nor a Content-Length (RFC 9110 §8.6).
    if r.status != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&r.body)?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// Writes a status line and `headers` (nothing else: no `Content-Length`, no
/// `Connection`), then the blank line.
pub fn write_head(
    mut stream: &TcpStream,
    status: u16,
    headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

/// Writes `status` and `headers` with `Connection: close` and no length, then `start`, then
/// `fill` over and over until the client stops reading or `max` bytes are written; returns
/// how many bytes of body were written.
pub fn write_endless(
    stream: &TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    start: &[u8],
    fill: &[u8],
    max: usize,
) -> usize {
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    if write_head(stream, status, &all).is_err() {
        return 0;
    }
    let mut w: &TcpStream = stream;
    let mut written = 0;
    if w.write_all(start).is_err() {
        return 0;
    }
    written += start.len();
    let fill: &[u8] = if fill.is_empty() { b" " } else { fill };
    let block: Vec<u8> = fill.iter().copied().cycle().take(64 * 1024).collect();
    while written < max {
        if w.write_all(&block).is_err() {
            break;
        }
        written += block.len();
    }
    let _ = w.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    written
}

/// Splits `a=1&b=2` into percent-decoded pairs (`+` is a space).
pub fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decodes `%XX` and `+`.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let digit = |c: u8| (c as char).to_digit(16);
                match (digit(b[i + 1]), digit(b[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The largest request body read (1 MiB); a bigger one is answered 413.
const MAX_BODY: usize = 1 << 20;
