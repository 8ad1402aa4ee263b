//! A DNS provider that runs an external hook for each TXT record.
//!
//! The hook is run as `CMD present FQDN VALUE` to publish a record and `CMD cleanup FQDN VALUE`
//! to remove it, where FQDN is lower-case with the trailing dot (`_acme-challenge.example.com.`)
//! and already follows any CNAME. Exit status 0 is success; anything else fails the call, and
//! what the hook wrote to stderr goes into the error, between divider lines. A hook that runs
//! longer than its timeout is killed together with the processes it started. A hook that
//! exits with 75 (`EX_TEMPFAIL`, a transient failure such as its API answering 429) is run
//! again, three times in all.
#![warn(missing_docs)]

use std::fmt;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use certkeeper_dns::{DnsProvider, Error as DnsError, RecordHandle, TxtRecord};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// The default time one hook call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `CMD present|cleanup FQDN VALUE`.
#[derive(Clone)]
pub struct ExecProvider {
    command: Vec<String>,
    timeout: Duration,
}

impl fmt::Debug for ExecProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The program only: arguments written in a config may carry tokens.
        f.debug_struct("ExecProvider")
            .field("program", &self.command.first())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ExecProvider {
    /// A provider running `command` (program and leading arguments), each call limited to
    /// `timeout`.
    pub fn new(command: Vec<String>, timeout: Duration) -> Result<ExecProvider, Error> {
        if command.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::EmptyCommand);
        }
        Ok(ExecProvider { command, timeout })
    }

    /// Runs the hook for one action and record; a hook that exits with [`EX_TEMPFAIL`]
    /// (a transient failure, as sysexits.h defines it) is run again, up to
    /// [`TEMPFAIL_ATTEMPTS`] times in all, after 0.5 s, then 1 s.
    async fn run(&self, action: Action, record: &TxtRecord) -> Result<(), Error> {
        let mut wait = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.run_once(action, record).await {
                Err(Error::Failed { ref status, .. })
                    if status == &temporary_status() && attempt < TEMPFAIL_ATTEMPTS =>
                {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs the hook once.
    async fn run_once(&self, action: Action, record: &TxtRecord) -> Result<(), Error> {
        let program = &self.command[0];
        let mut cmd = Command::new(program);
        cmd.args(&self.command[1..])
            .arg(action.as_str())
            .arg(&record.fqdn)
            .arg(&record.value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout kills what the hook started too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = spawn(&mut cmd).await.map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        let group = child.id();
        let mut stderr_pipe = child.stderr.take();
        let mut stderr = tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(pipe) = stderr_pipe.as_mut() {
                // A read error only shortens the evidence; the exit status decides. Bounded:
                // a hook that writes without end is cut off (and ends at its timeout).
                let _ = pipe.take(MAX_STDERR as u64 + 1).read_to_end(&mut buf).await;
            }
            buf
        });
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => {
                // The hook is done. A process it left running in its group (`sleep 300 &`)
                // may still hold the pipe: its output is not waited for past a moment, and
                // the group is killed, so the call ends with the hook.
                let stderr = match tokio::time::timeout(LINGER, &mut stderr).await {
                    Ok(bytes) => text(bytes.unwrap_or_default()),
                    Err(_) => {
                        kill_group_of(group);
                        stderr.abort();
                        String::new()
                    }
                };
                if status.success() {
                    Ok(())
                } else {
                    Err(Error::Failed {
                        action,
                        status: describe(status),
                        stderr,
                    })
                }
            }
            Ok(Err(source)) => Err(Error::Spawn {
                program: program.clone(),
                source,
            }),
            Err(_) => {
                kill_group(&mut child).await;
                // Whatever it wrote before it was killed; the pipe is closed now that the
                // whole group is gone, bounded anyway in case a process escaped the group.
                let stderr: String = match tokio::time::timeout(LINGER, &mut stderr).await {
                    Ok(bytes) => text(bytes.unwrap_or_default()),
                    Err(_) => {
                        stderr.abort();
                        String::new()
                    }
                };
                Err(Error::TimedOut {
                    action,
                    timeout: self.timeout,
                    stderr,
                })
            }
        }
    }
}

#[async_trait]
impl DnsProvider for ExecProvider {
    async fn present(&self, record: &TxtRecord) -> Result<RecordHandle, DnsError> {
        self.run(Action::Present, record)
            .await
            .map_err(|e| DnsError::Other(Box::new(e)))?;
        Ok(RecordHandle {
            record: record.clone(),
            id: None,
            zone: None,
        })
    }

    async fn cleanup(&self, handle: &RecordHandle) -> Result<(), DnsError> {
        self.run(Action::Cleanup, &handle.record)
            .await
            .map_err(|e| DnsError::Other(Box::new(e)))
    }
}

/// Which hook call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Publish the record.
    Present,
    /// Remove the record.
    Cleanup,
}

impl Action {
    /// The word passed to the hook.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Present => "present",
            Action::Cleanup => "cleanup",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Starts a command (a hook here; certkeeper's reload and health commands too). "Text file
/// busy" means some process still has the program open for writing: an update of the
/// program in progress, or, within this process, a child forked by another thread while the
/// file was being written that has not reached its own exec yet. Both pass within moments,
/// so that error is retried a few times (about 0.6 s in all) before it is reported.
pub async fn spawn(cmd: &mut Command) -> io::Result<tokio::process::Child> {
    let mut wait = Duration::from_millis(10);
    for _ in 0..SPAWN_BUSY_RETRIES {
        match cmd.spawn() {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    cmd.spawn()
}

/// How often a busy program is retried (waits of 10 ms doubling: 0.6 s in all).
const SPAWN_BUSY_RETRIES: usize = 6;

/// Why a hook call failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No program was configured.
    #[error("the hook command is empty; give the program and its leading arguments")]
    EmptyCommand,
    /// The program could not be started (or waited for).
    #[error("cannot run hook {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The hook exited with a status other than 0.
    #[error("{action} hook {status}{}", divided(stderr))]
    Failed {
        /// The call that failed.
        action: Action,
        /// `exited with status N` or `was killed by signal N`.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The hook ran longer than its timeout and was killed.
    #[error(
        "{action} hook did not finish within {} and was killed{}",
        certkeeper_base::text::seconds(*.timeout),
        divided(stderr)
    )]
    TimedOut {
        /// The call that timed out.
        action: Action,
        /// The limit.
        timeout: Duration,
        /// What it wrote to stderr before it was killed.
        stderr: String,
    },
}

/// stderr between divider lines, or nothing when the hook wrote nothing.
fn divided(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        return String::new();
    }
    format!("\n{STDERR_OPEN}\n{}\n{STDERR_CLOSE}", stderr.trim_end())
}

/// How long the end of a hook's output is waited for once the hook has exited or was killed.
const LINGER: Duration = Duration::from_secs(1);

fn text(bytes: Vec<u8>) -> String {
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if text.len() > MAX_STDERR {
        let mut cut = MAX_STDERR;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[stderr truncated]");
    }
    text
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// Kills the hook's process group (the hook and anything it started), then reaps the hook.
async fn kill_group(child: &mut tokio::process::Child) {
    kill_group_of(child.id());
    let _ = child.kill().await;
}

/// Kills the process group whose leader had the process id `group` (the hook, started in a
/// group of its own), also after the leader itself has exited.
fn kill_group_of(group: Option<u32>) {
    if let Some(pgid) = group
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(Pid::from_raw)
    {
        // ESRCH (the group is already gone) is the only expected failure.
        let _ = kill_process_group(pgid, Signal::KILL);
    }
}

/// The exit status a hook uses to say "a transient failure, try again" (sysexits.h).
pub const EX_TEMPFAIL: i32 = 75;
/// How many times a hook that exits with [`EX_TEMPFAIL`] is run in all.
pub const TEMPFAIL_ATTEMPTS: u32 = 3;

fn temporary_status() -> String {
    format!("exited with status {EX_TEMPFAIL}")
}

const STDERR_OPEN: &str = "---------- stderr ----------";
const STDERR_CLOSE: &str = "----------------------------";
/// The most stderr kept in an error (the end of a long log is rarely what explains it).
const MAX_STDERR: usize = 8 * 1024;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use super::*;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("hook.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn provider(path: &Path, timeout: Duration) -> ExecProvider {
        ExecProvider::new(vec![path.display().to_string()], timeout).unwrap()
    }

    fn record() -> TxtRecord {
        TxtRecord {
            fqdn: "_acme-challenge.example.com.".into(),
            value: "dGVzdA".into(),
        }
    }

    #[tokio::test]
    async fn passes_action_fqdn_and_value() {
        let dir = tempfile_dir();
        let log = dir.join("calls");
        let hook = script(&dir, &format!("echo \"$@\" >> {}", log.display()));
        let p = provider(&hook, Duration::from_secs(10));
        let handle = p.present(&record()).await.unwrap();
        assert_eq!(handle.record, record());
        p.cleanup(&handle).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "present _acme-challenge.example.com. dGVzdA\n\
             cleanup _acme-challenge.example.com. dGVzdA\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn leading_arguments_come_first() {
        let dir = tempfile_dir();
        let log = dir.join("calls");
        let hook = script(&dir, &format!("echo \"$@\" > {}", log.display()));
        let p = ExecProvider::new(
            vec![
                hook.display().to_string(),
                "--zone".into(),
                "example.com".into(),
            ],
            Duration::from_secs(10),
        )
        .unwrap();
        p.present(&record()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "--zone example.com present _acme-challenge.example.com. dGVzdA\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipe_does_not_hold_the_call() {
        let dir = tempfile_dir();
        // The hook exits at once, leaving a child that holds its stderr (a sleep no other
        // test runs, to find it again).
        let hook = script(&dir, "sleep 31.25 &\necho 'published' >&2\nexit 0");
        let started = std::time::Instant::now();
        provider(&hook, Duration::from_secs(5))
            .run(Action::Present, &record())
            .await
            .unwrap();
        // The call ends with the hook (plus the moment given to its output), not with
        // the child or the hook's timeout.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        // And what the hook left in its group was killed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let found = std::process::Command::new("pgrep")
            .args(["-f", "sleep 31.25"])
            .output()
            .unwrap();
        assert!(
            found.stdout.is_empty(),
            "left running: {}",
            String::from_utf8_lossy(&found.stdout)
        );
    }

    #[tokio::test]
    async fn a_hook_that_writes_without_end_is_cut_off() {
        let dir = tempfile_dir();
        let hook = script(&dir, "yes error >&2");
        let err = provider(&hook, Duration::from_secs(5))
            .run(Action::Present, &record())
            .await
            .unwrap_err();
        // Its output is read up to a bound; then the pipe closes and the hook ends.
        let text = err.to_string();
        assert!(text.contains("[stderr truncated]"), "{}", text.len());
        assert!(text.len() < MAX_STDERR + 1024, "{}", text.len());
    }

    #[tokio::test]
    async fn failure_keeps_status_and_stderr_between_dividers() {
        let dir = tempfile_dir();
        let hook = script(
            &dir,
            "echo 'zone example.com: permission denied' >&2\nexit 3",
        );
        let err = provider(&hook, Duration::from_secs(10))
            .run(Action::Present, &record())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "present hook exited with status 3\n\
             ---------- stderr ----------\n\
             zone example.com: permission denied\n\
             ----------------------------"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_hook_open_for_writing_is_retried_until_it_is_closed() {
        let dir = tempfile_dir();
        let hook = script(&dir, "exit 0");
        let open_for_writing = || std::fs::OpenOptions::new().write(true).open(&hook).unwrap();
        // Closed after 50 ms: the start is retried and succeeds.
        let writer = open_for_writing();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(writer);
        });
        provider(&hook, Duration::from_secs(10))
            .present(&record())
            .await
            .unwrap();
        release.await.unwrap();
        // Never closed: reported once the retries are spent.
        let writer = open_for_writing();
        let err = provider(&hook, Duration::from_secs(10))
            .present(&record())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Text file busy"), "{err}");
        drop(writer);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn failure_without_stderr_is_one_line() {
        let dir = tempfile_dir();
        let hook = script(&dir, "exit 1");
        let err = provider(&hook, Duration::from_secs(10))
            .present(&record())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "present hook exited with status 1");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn timeout_kills_the_hook_and_its_children() {
        let dir = tempfile_dir();
        let marker = dir.join("survived");
        // The hook starts a child that would write the marker after 2 s; the kill must
        // reach it too.
        let hook = script(
            &dir,
            &format!(
                "echo started >&2\n(sleep 2; touch {}) &\nsleep 30",
                marker.display()
            ),
        );
        let started = Instant::now();
        let err = provider(&hook, Duration::from_millis(500))
            .run(Action::Cleanup, &record())
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                err,
                Error::TimedOut {
                    action: Action::Cleanup,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("cleanup hook did not finish within 0.5s and was killed\n"),
            "{text}"
        );
        assert!(text.contains("\nstarted\n"), "{text}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a child of the hook outlived the timeout");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn missing_program_is_named() {
        let p = ExecProvider::new(
            vec!["/nonexistent/certkeeper-hook".into()],
            Duration::from_secs(1),
        )
        .unwrap();
        let err = p.present(&record()).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot run hook /nonexistent/certkeeper-hook: "),
            "{err}"
        );
    }

    #[test]
    fn empty_command_is_refused() {
        assert!(matches!(
            ExecProvider::new(vec![], DEFAULT_TIMEOUT),
            Err(Error::EmptyCommand)
        ));
        assert!(matches!(
            ExecProvider::new(vec![String::new()], DEFAULT_TIMEOUT),
            Err(Error::EmptyCommand)
        ));
    }

    /// A fresh directory under the system temp dir (no tempfile dependency in this crate).
    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "certkeeper-exec-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
