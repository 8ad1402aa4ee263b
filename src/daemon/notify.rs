//! The systemd notification protocol (`sd_notify(3)`), written from its documentation: one
//! datagram per message to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace), newline-separated `KEY=VALUE` lines. Without `NOTIFY_SOCKET` every
//! call does nothing, so the daemon runs the same under systemd, another supervisor or a
//! terminal.
//!
//! Messages the daemon sends: `READY=1` once it runs (and again after a reload),
//! `RELOADING=1` with `MONOTONIC_USEC` when a SIGHUP is taken up, `STOPPING=1` on
//! SIGTERM/SIGINT, `STATUS=` after each pass, and `WATCHDOG=1` every half `WATCHDOG_USEC`
//! when the unit sets `WatchdogSec=`.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; `None` inside when the process was not started by a supervisor
/// that asked for them.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for (a no-op one without it).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            match open(path.as_encoded_bytes()) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(socket = %path.to_string_lossy(), "Cannot use NOTIFY_SOCKET; the service manager gets no notifications: {e}");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// Sends one message (lines `KEY=VALUE`). A failure is logged, never fatal: the
    /// certificates matter more than the service manager's view of them.
    pub fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::debug!("Cannot notify the service manager: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with the monotonic time systemd uses to match the reload.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=Reloading the config",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=Stopping");
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set for this process
/// (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

fn open(path: &[u8]) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match path.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))?
        }
    };
    let socket = UnixDatagram::unbound()?;
    // A full socket buffer must never stall a pass; such a message is dropped.
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// A status is one line: newlines would start new `KEY=VALUE` assignments.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock `MONOTONIC_USEC` is read against.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000 + (t.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let (socket, addr) = open(path.as_os_str().as_encoded_bytes()).unwrap();
        let n = Notifier {
            target: Some((socket, addr)),
        };
        n.ready("Running\nsecond line");
        n.reloading();
        n.stopping();
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        for _ in 0..3 {
            let len = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(got[0], "READY=1\nSTATUS=Running second line");
        assert!(
            got[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{}",
            got[1]
        );
        let usec: u64 = got[1].lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
            .parse()
            .unwrap();
        assert!(usec > 0);
        assert_eq!(got[2], "STOPPING=1\nSTATUS=Stopping");
    }

    #[test]
    fn abstract_names_are_supported() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("certkeeper-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let (socket, addr) = open(format!("@{name}").as_bytes()).unwrap();
        Notifier {
            target: Some((socket, addr)),
        }
        .watchdog();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    /// A supervisor that stops reading (the queue fills) or goes away never stalls nor fails
    /// the caller: a pass must not wait on the service manager.
    #[test]
    fn a_full_or_gone_socket_never_stalls_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(open(path.as_os_str().as_encoded_bytes()).unwrap()),
        };
        // Far more messages than a datagram socket queues (net.unix.max_dgram_qlen, 512 by
        // default), none read: a blocking send would wait here for ever.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for i in 0..5_000 {
                n.status(&i.to_string());
            }
            let _ = done.send(n);
        });
        let n = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("sending to a full socket stalled the caller");
        // What was queued arrived in order; the rest was dropped.
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=0");
        // The supervisor is gone: sending is still harmless.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        n.ready("after");
        n.watchdog();
    }
}
