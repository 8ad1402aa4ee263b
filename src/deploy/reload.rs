//! Running a service's reload (or health check) command: no shell, stdin null, stdout and
//! stderr captured together and bounded, in its own process group, killed as a group at the
//! deadline. Its output is made safe to print with [`escape_control`].
//!
//! Waiting is bounded by the process group, not by the pipe (STYLE.md §9): a command that
//! leaves `sleep 300 &` behind keeps the pipe open, so reading stops [`OUTPUT_GRACE`] after the
//! command exited or was killed, whatever is still holding the pipe.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::text::{escape_control, seconds};

/// What a command that exited 0 left behind.
#[derive(Clone, Debug)]
pub struct Ran {
    /// stdout and stderr as written, interleaved; the last [`MAX_OUTPUT`] bytes at most, escaped
    /// with [`escape_control`].
    pub output: String,
    /// From the start to the exit.
    pub elapsed: Duration,
}

/// Why a command did not succeed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No program was configured.
    #[error("the {what} command is empty; give the program and its arguments")]
    Empty {
        /// The command's role: "reload" or "health check".
        what: &'static str,
    },
    /// The program could not be started (or waited for).
    #[error("cannot run {what} command {program}: {source}")]
    Spawn {
        /// The command's role.
        what: &'static str,
        /// The program (argv\[0\]); the arguments are left out, they can hold tokens.
        program: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The command exited with a status other than 0, or was killed by a signal.
    #[error("{what} command {program} {status}{}", divided(output))]
    Failed {
        /// The command's role.
        what: &'static str,
        /// The program (argv\[0\]).
        program: String,
        /// `exited with status N` or `was killed by signal N` (see [`describe_status`]).
        status: String,
        /// What it wrote, escaped and bounded as in [`Ran::output`].
        output: String,
    },
    /// The command ran longer than its timeout; its process group was killed.
    #[error(
        "{what} command {program} did not finish within {} and was killed{}",
        seconds(*timeout),
        divided(output)
    )]
    TimedOut {
        /// The command's role.
        what: &'static str,
        /// The program (argv\[0\]).
        program: String,
        /// The limit.
        timeout: Duration,
        /// What it wrote before it was killed.
        output: String,
    },
}

/// Runs `argv` (no shell) with `env` added to the inherited environment, stdin null, stdout
/// and stderr captured together, in its own process group. `what` names the command's role
/// in messages ("reload", "health check").
///
/// At `timeout` the whole group is killed with SIGKILL. Processes the command leaves behind
/// when it exits on its own are not killed (a reload may start a daemon), but reading their
/// output stops [`OUTPUT_GRACE`] after the exit. Only argv\[0\] appears in errors.
pub async fn run(
    what: &'static str,
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Ran, CommandError> {
    let Some((program, args)) = argv.split_first().filter(|(p, _)| !p.is_empty()) else {
        return Err(CommandError::Empty { what });
    };
    let spawn_err = |source| CommandError::Spawn {
        what,
        program: program.clone(),
        source,
    };
    let started = Instant::now();
    let (mut reader, mut child) = {
        let (writer, reader) = pipe::pipe().map_err(spawn_err)?;
        let writer: OwnedFd = writer.into_blocking_fd().map_err(spawn_err)?;
        let writer2 = writer.try_clone().map_err(spawn_err)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            // Its own process group, so that a timeout kills what the command started too.
            .process_group(0)
            .kill_on_drop(true);
        let child = certkeeper_dns_exec::spawn(&mut cmd)
            .await
            .map_err(spawn_err)?;
        // `cmd` holds the pipe's write ends until dropped here; after that only the command
        // (and what it starts) holds them, so the reader sees EOF when they are all gone.
        (reader, child)
    };
    let mut guard = GroupGuard::new(&child);

    let mut tail = Tail::default();
    let mut buf = vec![0u8; 8192];
    let mut eof = false;
    let mut exit: Option<io::Result<ExitStatus>> = None;
    let mut timed_out = false;
    // A timeout too large to add is as good as none.
    let mut until = started
        .checked_add(timeout)
        .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400));
    loop {
        if eof && exit.is_some() {
            break;
        }
        tokio::select! {
            read = reader.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => tail.push(&buf[..n]),
            },
            status = child.wait(), if exit.is_none() => {
                guard.disarm();
                exit = Some(status);
                until = Instant::now() + OUTPUT_GRACE;
            }
            () = tokio::time::sleep_until(until) => {
                if exit.is_some() {
                    // Exited, but something it started still holds the pipe.
                    break;
                }
                timed_out = true;
                guard.kill();
                // SIGKILL cannot be caught; the wait is bounded anyway in case the process
                // is stuck in the kernel.
                let status = tokio::time::timeout(OUTPUT_GRACE, child.wait()).await;
                exit = Some(status.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())));
                until = Instant::now() + OUTPUT_GRACE;
            }
        }
    }
    let elapsed = started.elapsed();
    let output = tail.into_text();
    if timed_out {
        return Err(CommandError::TimedOut {
            what,
            program: program.clone(),
            timeout,
            output,
        });
    }
    // The loop ends only with `exit` set.
    match exit.unwrap_or_else(|| Err(io::ErrorKind::Other.into())) {
        Ok(status) if status.success() => Ok(Ran { output, elapsed }),
        Ok(status) => Err(CommandError::Failed {
            what,
            program: program.clone(),
            status: describe_status(status),
            output,
        }),
        Err(source) => Err(spawn_err(source)),
    }
}

/// `exited with status N`, `was killed by signal N`.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// The output between divider lines, or nothing when there is none.
pub(crate) fn divided(output: &str) -> String {
    if output.trim().is_empty() {
        return String::new();
    }
    format!("\n{OUTPUT_OPEN}\n{}\n{OUTPUT_CLOSE}", output.trim_end())
}

/// Kills the command's process group when the run is abandoned (the future dropped, or the
/// deadline passed) before the command was reaped. Disarmed as soon as it is reaped: from
/// then on its pid, and so its group id, may belong to someone else.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn new(child: &Child) -> GroupGuard {
        // `process_group(0)` made the child the leader of a group whose id is its pid.
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        GroupGuard { pgid }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }

    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (the group is already gone) is the only expected failure.
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`MAX_OUTPUT`] bytes of a stream, and how many came before them.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    cut: usize,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim in batches, not on every read.
        if self.buf.len() > 2 * MAX_OUTPUT {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > MAX_OUTPUT {
            let excess = self.buf.len() - MAX_OUTPUT;
            self.buf.drain(..excess);
            self.cut += excess;
        }
    }

    /// The kept bytes as escaped text, prefixed by `[... N bytes cut]` when some were dropped.
    fn into_text(mut self) -> String {
        self.trim();
        let mut start = 0;
        if self.cut > 0 {
            // Don't start inside a UTF-8 sequence: skip its continuation bytes.
            while start < self.buf.len().min(3) && self.buf[start] & 0xc0 == 0x80 {
                start += 1;
            }
        }
        let text = escape_control(&String::from_utf8_lossy(&self.buf[start..]));
        match self.cut + start {
            0 => text,
            cut => format!("[... {cut} bytes cut]\n{text}"),
        }
    }
}

/// How long output is still read after the command exited or was killed.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// The most output kept, in bytes: the end, which is what usually explains a failure.
pub const MAX_OUTPUT: usize = 8 * 1024;
const OUTPUT_OPEN: &str = "---------- output ----------";
const OUTPUT_CLOSE: &str = "----------------------------";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use super::*;

    fn script(dir: &Path, body: &str) -> Vec<String> {
        let path = dir.join("cmd.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        vec![path.display().to_string()]
    }

    fn program(argv: &[String]) -> PathBuf {
        PathBuf::from(&argv[0])
    }

    /// Whether a process is gone (or a zombie waiting for its new parent to reap it).
    fn dead(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => true,
            // `pid (comm) S ...`: the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }

    #[tokio::test]
    async fn success_returns_stdout_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let argv = script(dir.path(), "echo one\necho two >&2\necho \"$1 $2\"");
        let argv = [argv, vec!["a".into(), "b".into()]].concat();
        let ran = run("reload", &argv, &[], Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ran.output, "one\ntwo\na b\n");
        assert!(ran.elapsed < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn failure_shows_status_and_output_between_dividers() {
        let dir = tempfile::tempdir().unwrap();
        let argv = script(dir.path(), "echo 'nginx: [emerg] bad config' >&2\nexit 1");
        let argv = [argv, vec!["--token=secret".into()]].concat();
        let err = run("reload", &argv, &[], Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Failed { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "reload command {} exited with status 1\n\
                 ---------- output ----------\n\
                 nginx: [emerg] bad config\n\
                 ----------------------------",
                program(&argv).display()
            )
        );
        assert!(!err.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn failure_without_output_is_one_line_and_signals_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let argv = script(dir.path(), "kill -9 $$");
        let err = run("health check", &argv, &[], Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "health check command {} was killed by signal 9",
                program(&argv).display()
            )
        );
    }

    #[tokio::test]
    async fn env_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let argv = script(dir.path(), "echo \"$CERTKEEPER_CERT:$PATH_SET\"");
        let env = [
            ("CERTKEEPER_CERT".to_owned(), "www".to_owned()),
            ("PATH_SET".to_owned(), "yes".to_owned()),
        ];
        let ran = run("reload", &argv, &env, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ran.output, "www:yes\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_group_and_does_not_wait_for_the_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let argv = script(
            dir.path(),
            &format!(
                "echo started\nsleep 300 &\necho $! > {}\nsleep 300",
                pidfile.display()
            ),
        );
        let started = std::time::Instant::now();
        let err = run("reload", &argv, &[], Duration::from_millis(500))
            .await
            .unwrap_err();
        // Killed at 0.5 s: far below the 300 s the group would hold the pipe.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "reload command {} did not finish within 0.5s and was killed\n\
                 ---------- output ----------\n\
                 started\n\
                 ----------------------------",
                program(&argv).display()
            )
        );
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(dead(&pid), "grandchild {} outlived the timeout", pid.trim());
    }

    #[tokio::test]
    async fn a_background_process_holding_the_pipe_does_not_hold_up_success() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("daemon");
        let argv = script(
            dir.path(),
            &format!(
                "sleep 300 &\necho $! > {}\necho reloaded",
                pidfile.display()
            ),
        );
        let started = std::time::Instant::now();
        let ran = run("reload", &argv, &[], Duration::from_secs(30))
            .await
            .unwrap();
        // Far below the 300 s the background process holds the pipe (and the 30 s timeout,
        // at which waiting for the pipe would have failed the run).
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(ran.output, "reloaded\n");
        // Left alive (a reload may start a daemon); clean up.
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = rustix::process::kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL);
    }

    #[tokio::test]
    async fn long_output_keeps_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        // 20000 'a's, then the line that explains the failure.
        let argv = script(
            dir.path(),
            "head -c 20000 /dev/zero | tr '\\0' a\necho\necho 'the real error'\nexit 2",
        );
        let err = run("reload", &argv, &[], Duration::from_secs(10))
            .await
            .unwrap_err();
        let CommandError::Failed { output, .. } = &err else {
            panic!("{err:?}");
        };
        let total = 20000 + 1 + "the real error\n".len();
        let cut = total - MAX_OUTPUT;
        assert!(
            output.starts_with(&format!("[... {cut} bytes cut]\naaa")),
            "{}",
            &output[..40]
        );
        assert!(output.ends_with("a\nthe real error\n"));
        assert_eq!(
            output.len(),
            MAX_OUTPUT + format!("[... {cut} bytes cut]\n").len()
        );
    }

    #[tokio::test]
    async fn control_characters_are_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let argv = script(
            dir.path(),
            "printf 'red \\033[31mtext\\r\\n\\ttab \\377\\n'",
        );
        let ran = run("reload", &argv, &[], Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ran.output, "red \\x1b[31mtext\\x0d\n\ttab \u{fffd}\n");
        assert_eq!(escape_control("a\u{7f}b\u{85}c\0"), "a\\x7fb\\x85c\\x00");
        assert_eq!(escape_control("ok\n\tünïcode"), "ok\n\tünïcode");
    }

    #[test]
    fn a_cut_inside_a_character_drops_its_remainder() {
        let mut tail = Tail::default();
        tail.push("é".as_bytes());
        tail.push(&vec![b'x'; MAX_OUTPUT - 1]);
        // The first byte of 'é' was cut, its second byte is skipped.
        let text = tail.into_text();
        assert!(
            text.starts_with("[... 2 bytes cut]\nxxx"),
            "{}",
            &text[..30]
        );
    }

    #[tokio::test]
    async fn missing_program_is_named() {
        let argv = vec![
            "/nonexistent/certkeeper-reload".to_owned(),
            "tok".to_owned(),
        ];
        let err = run("reload", &argv, &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot run reload command /nonexistent/certkeeper-reload: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn empty_argv_is_refused() {
        for argv in [vec![], vec![String::new()]] {
            let err = run("reload", &argv, &[], Duration::from_secs(1))
                .await
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "the reload command is empty; give the program and its arguments"
            );
        }
    }
}
