//! The command line: argument parsing (clap derive), logging setup, and dispatch to one
//! file per subcommand. Every error a user can cause ends here as one line
//! `certkeeper: ...` on stderr and the command's documented exit code.

mod alert;
mod ca;
mod check;
mod completions;
mod config_check;
mod fleet;
mod import;
mod logfmt;
mod online;
mod persist;
mod release;
mod renew;
mod run;
mod snapshots;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};

/// Keeps TLS certificates alive: renew, verify, swap atomically, roll back, alert.
#[derive(Debug, Parser)]
#[command(name = "certkeeper", version, about, max_term_width = 100)]
pub struct Args {
    /// The config file.
    #[arg(long, global = true, env = "CERTKEEPER_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// How log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inventory of managed and discovered certificates (Nagios exit codes: 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN).
    Check {
        /// One JSON array, an object per certificate.
        #[arg(long)]
        json: bool,
        /// Also connect to each certificate's `verify.tls_connect` and check what is served:
        /// the chain complete to a trusted root, the served leaf the live one.
        #[arg(long)]
        probe: bool,
        /// Only these managed certificates.
        names: Vec<String>,
    },
    /// Re-check the live files of one managed certificate (exit codes as `check`).
    Verify {
        /// One JSON object instead of the readable report.
        #[arg(long)]
        json: bool,
        /// The certificate's name.
        name: String,
    },
    /// One pass: renew what is due, check it, swap it in with a snapshot, reload, verify what
    /// is served, and roll back on failure (exit 0 all good or nothing due, 1 at least one
    /// certificate failed, rolled back or is waiting out a retry backoff, 2 config or usage
    /// error).
    Renew {
        /// Renew the named (or all) certificates even when not due, ignoring the retry
        /// backoff.
        #[arg(long)]
        force: bool,
        /// Do everything up to the swap and change nothing on disk.
        #[arg(long)]
        dry_run: bool,
        /// Swap new pairs in without reloading or verifying the services (a first issuance
        /// before the service runs); the next pass reloads and verifies them.
        #[arg(long, conflicts_with = "dry_run")]
        no_reload: bool,
        /// After the pass, write the metrics (as `certkeeper metrics` prints them, plus the
        /// pass's duration and outcomes) to this file, atomically, for node_exporter's
        /// textfile collector.
        #[arg(long, value_name = "PATH")]
        textfile: Option<PathBuf>,
        /// Only these certificates.
        names: Vec<String>,
    },
    /// The daemon: a pass at start, then on `renewal.schedule` (UTC, with `renewal.jitter`)
    /// and whenever a certificate becomes due or leaves its retry backoff. SIGHUP re-reads
    /// the config (a bad one is refused and the old one kept); SIGTERM/SIGINT finish the step
    /// in flight and exit 0. Talks to systemd (Type=notify) when NOTIFY_SOCKET is set.
    Run {
        /// One pass and exit, exactly as `renew` (and with its exit codes).
        #[arg(long, conflicts_with = "metrics_listen")]
        once: bool,
        /// Serve the metrics (as `certkeeper metrics` prints them, plus the last pass) at
        /// http://ADDR/metrics, e.g. 127.0.0.1:9810.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Print Prometheus metrics for every managed certificate: notAfter, last success, last
    /// attempt, consecutive failures, last result (exit 0, or 2 on a config error).
    Metrics,
    /// List a certificate's snapshots, newest first (exit 0, or 2 on a config or usage error).
    Snapshots {
        /// One JSON array, an object per snapshot.
        #[arg(long)]
        json: bool,
        /// The certificate's name.
        name: String,
    },
    /// Put a snapshot back as the live pair, atomically, then reload the service and check
    /// that it serves the restored certificate (exit 0, 1 failed, 2 config or usage error).
    /// The replaced pair is kept as a snapshot, so a rollback can be undone.
    Rollback {
        /// The certificate's name.
        name: String,
        /// The snapshot id (default: the newest one whose leaf differs from the live one and
        /// that verifies).
        #[arg(long)]
        to: Option<String>,
        /// Keep the certificate on the restored pair: no deploys and no orders until
        /// `certkeeper release NAME`, or until it is within half of `before_expiry` of its
        /// notAfter. Set only when the rollback went through; a rollback without it leaves a
        /// hold as it is.
        #[arg(long)]
        hold: bool,
    },
    /// End the hold a `rollback --hold` set: the next pass deploys kept material or renews
    /// when due (exit 0, also when it was not held; 1 failed; 2 config or usage error).
    Release {
        /// The certificate's name.
        name: String,
    },
    /// Alert channels (exit 0 all delivered, 1 otherwise, 2 config or usage error).
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Validate the config (exit 0 valid, 2 invalid).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The built-in CA (local-ca issuers): its root rotation.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Fleet mode: certificates issued once and deployed by many hosts through etcd.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// dns-persist-01: the standing TXT records that let a certificate renew with its ACME
    /// account alone, no DNS credentials on the host.
    Persist {
        #[command(subcommand)]
        command: PersistCommand,
    },
    /// Print a config fragment for what another tool manages, reading its files only
    /// (exit 0 all imported, 1 some left out, 2 nothing readable); needs no config.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Print the completion script for a shell to stdout (exit 0); needs no config.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (exit 0); needs no config.
    Man,
}

/// `alert` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Send a test event to each (or the named) channel and print what each vendor answered.
    Test {
        /// Channel names (a channel's `name`, or its type: `slack`, `webhook-2`, ...).
        channels: Vec<String>,
    },
}

/// `ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Start rotating a local CA's root: a new root and intermediate, trusted at once
    /// (root.pem and the issuer's trust_bundle hold both roots, trust_reload runs); they sign
    /// after the overlap, the leaves of the old root renew at the next pass, and the pass
    /// after the last of them retires the old root (exit 0; 1 not started: a rotation is
    /// under way, the CA does not exist yet, a write failed; 2 config or usage error).
    Rotate {
        /// The local-ca issuer's name.
        issuer: String,
        /// How long both roots are trusted before the new one signs.
        #[arg(long, value_name = "DURATION", default_value = ca::DEFAULT_OVERLAP)]
        overlap: String,
    },
    /// Show a local CA's roots (which signs), its rotation's phase, its trust bundle, and
    /// which root each of its certificates' live chains ends at (exit 0; 1 unreadable; 2
    /// config or usage error).
    Status {
        /// The local-ca issuer's name.
        issuer: String,
        /// One JSON object instead of the readable report.
        #[arg(long)]
        json: bool,
    },
}

/// `fleet` subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Write a new seal key (32 random bytes, mode 0600) to PATH or to the config's
    /// `fleet.seal_key_file`; copy it to every host over a secure channel (exit 0, 1 not
    /// written: the file exists without --force, a link or no file is there, a write error;
    /// 2 config or usage error).
    Keygen {
        /// Where to write the key (default: `fleet.seal_key_file` of the config).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Replace an existing key file (every host then needs the new key).
        #[arg(long)]
        force: bool,
    },
    /// Show each shared certificate (`fleet: true`) as etcd has it: its current generation
    /// (serial, fingerprint, notAfter, issuer host, verdict), the leader, and every host
    /// that reports a state (exit 0; 1 etcd unreachable or without quorum; 2 config or usage
    /// error, a config without a `fleet:` section included).
    Status {
        /// One JSON object instead of the readable report.
        #[arg(long)]
        json: bool,
        /// Only these shared certificates.
        names: Vec<String>,
    },
}

/// `persist` subcommands.
#[derive(Debug, Subcommand)]
pub enum PersistCommand {
    /// Print, in zone-file syntax, the `_validation-persist` TXT record(s) that authorize each
    /// ACME issuer's account (created if needed) for the certificate's names; a wildcard gets
    /// `policy=wildcard` (exit 0; 1 the CA or the account failed; 2 config or usage error).
    Show {
        /// The certificate's name.
        name: String,
    },
    /// Create those records once through the certificate's `dns_provider` (each one not yet
    /// visible at the resolvers) and wait until they are visible (exit 0; 1 failed; 2 config
    /// or usage error, a certificate without `dns_provider` included).
    Publish {
        /// The certificate's name.
        name: String,
    },
}

/// `import` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// certbot's lineages and accounts: an issuer per ACME server and account (reusing
    /// certbot's account), a certificate per lineage, a comment for what does not carry over.
    /// certbot's files are only read.
    Certbot {
        /// certbot's configuration directory (default /etc/letsencrypt).
        #[arg(long, value_name = "DIR")]
        config_dir: Option<PathBuf>,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate the config and print what would be managed.
    Check {
        /// Do not check that secrets resolve and referenced files exist.
        #[arg(long, conflicts_with = "online")]
        no_environment: bool,
        /// Also prove each DNS provider's credentials (create and remove a harmless TXT
        /// record `_certkeeper-check.<domain>`) and reach each ACME issuer's directory.
        #[arg(long)]
        online: bool,
    },
}

/// Parses the arguments, runs the command and returns the process exit code.
pub fn run() -> u8 {
    crate::acme::install_crypto_provider();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let usage_error = e.use_stderr();
            // clap prints help/version to stdout and usage errors to stderr itself.
            let _ = e.print();
            if !usage_error {
                return 0;
            }
            return usage_exit_code();
        }
    };
    init_logging(&args);
    match args.command {
        Command::Check {
            json,
            probe,
            ref names,
        } => check::check(&args.config, names, json, probe),
        Command::Verify { json, ref name } => check::verify(&args.config, name, json),
        Command::Metrics => renew::metrics(&args.config),
        Command::Renew {
            force,
            dry_run,
            no_reload,
            ref textfile,
            ref names,
        } => renew::run(
            &args.config,
            crate::pass::Options {
                force,
                dry_run,
                no_reload,
                names: names.clone(),
                stop: Default::default(),
            },
            textfile.as_deref(),
        ),
        Command::Run {
            once: true,
            metrics_listen: _,
        } => renew::run(&args.config, crate::pass::Options::default(), None),
        Command::Run {
            once: false,
            metrics_listen,
        } => run::run(&args.config, metrics_listen),
        Command::Snapshots { json, ref name } => snapshots::snapshots(&args.config, name, json),
        Command::Rollback {
            ref name,
            ref to,
            hold,
        } => snapshots::rollback(&args.config, name, to.as_deref(), hold),
        Command::Release { ref name } => release::release(&args.config, name),
        Command::Config {
            command:
                ConfigCommand::Check {
                    no_environment,
                    online,
                },
        } => config_check::run(&args.config, !no_environment, online),
        Command::Alert {
            command: AlertCommand::Test { ref channels },
        } => alert::test(&args.config, channels),
        Command::Ca {
            command:
                CaCommand::Rotate {
                    ref issuer,
                    ref overlap,
                },
        } => ca::rotate(&args.config, issuer, overlap),
        Command::Ca {
            command: CaCommand::Status { ref issuer, json },
        } => ca::status(&args.config, issuer, json),
        Command::Fleet {
            command: FleetCommand::Keygen { ref out, force },
        } => fleet::keygen(&args.config, out.as_deref(), force),
        Command::Fleet {
            command: FleetCommand::Status { json, ref names },
        } => fleet::status(&args.config, names, json),
        Command::Persist {
            command: PersistCommand::Show { ref name },
        } => persist::show(&args.config, name),
        Command::Persist {
            command: PersistCommand::Publish { ref name },
        } => persist::publish(&args.config, name),
        Command::Import {
            command: ImportCommand::Certbot { ref config_dir },
        } => import::certbot(&import::config_dir(config_dir.clone())),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man => completions::man(),
    }
}

/// Opens `config`'s state_dir, takes its lock (waiting for a pass that holds it) and runs `f`
/// under it; `Err(1)` after one line naming `what` when the state_dir cannot be opened or
/// locked.
pub(crate) fn with_lock<T>(
    config: &Config,
    what: &str,
    f: impl FnOnce(&crate::store::Store, &crate::store::Locked<'_>) -> T,
) -> Result<T, u8> {
    let store = crate::store::Store::open(&config.state_dir).map_err(|e| {
        eprintln!("certkeeper: {what}: {e}");
        1
    })?;
    let locked = store.lock().map_err(|e| {
        eprintln!("certkeeper: {what}: {e}");
        1
    })?;
    Ok(f(&store, &locked))
}

/// Loads the config, printing every problem as its own `certkeeper: ` line on failure.
pub(crate) fn load_config(path: &std::path::Path) -> Result<Config, ConfigError> {
    let result = Config::load(path);
    match &result {
        Ok(config) => {
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
        }
        Err(err) => {
            for line in err.lines() {
                eprintln!("certkeeper: {line}");
            }
        }
    }
    result
}

/// Whether every name is a configured certificate; prints one line naming the unknown ones
/// and the configured ones otherwise.
pub(crate) fn known_names(
    config: &Config,
    config_path: &std::path::Path,
    names: &[String],
) -> bool {
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| config.certificate(n).is_none())
        .map(|n| format!("\"{n}\""))
        .collect();
    if unknown.is_empty() {
        return true;
    }
    let known: Vec<&str> = config
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    eprintln!(
        "certkeeper: {}: no certificate named {}; configured: {}",
        config_path.display(),
        unknown.join(", "),
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    );
    false
}

/// The async runtime of a command that reloads, verifies or issues; `Err` with the exit
/// code after printing why it could not start.
pub(crate) fn runtime(failed: u8) -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("certkeeper: cannot start the async runtime: {e}");
            failed
        })
}

/// Writes to stdout. `false` (after one line on stderr) when the output could not be written
/// (a full disk, `> /dev/full`): the command must not then claim success. A reader that
/// stopped reading (`| head`) is not a failure.
#[must_use]
pub(crate) fn print(text: &str) -> bool {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => true,
        Err(e) => {
            eprintln!("certkeeper: cannot write the output: {e}");
            false
        }
    }
}

/// The exit code of a usage error, which depends on the command's convention: `check` and
/// `verify` follow Nagios (3 UNKNOWN), the others exit 2.
fn usage_exit_code() -> u8 {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match subcommand_of(&argv).as_deref() {
        Some("check" | "verify") => 3,
        _ => 2,
    }
}

/// The subcommand `argv` (without the program name) names, found as clap finds it: the first
/// word that is neither a global option nor the value of one (`--config C`, `--config=C`,
/// `-vq`, `--log-format json`), even when parsing failed.
fn subcommand_of(argv: &[String]) -> Option<String> {
    use clap::CommandFactory;
    let cmd = Args::command();
    let takes_value = |arg: &clap::Arg| arg.get_action().takes_values();
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            if !long.contains('=')
                && cmd
                    .get_arguments()
                    .any(|a| a.get_long() == Some(long) && takes_value(a))
            {
                words.next();
            }
            continue;
        }
        if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            // `-xVALUE` carries its value; `-x VALUE` takes the next word.
            let mut chars = shorts.chars();
            while let Some(c) = chars.next() {
                if cmd
                    .get_arguments()
                    .any(|a| a.get_short() == Some(c) && takes_value(a))
                {
                    if chars.as_str().is_empty() {
                        words.next();
                    }
                    break;
                }
            }
            continue;
        }
        return cmd
            .find_subcommand(word)
            .map(|sub| sub.get_name().to_owned());
    }
    None
}

/// Sets up the log lines on stderr: JSON lines with `--log-format json`, otherwise text that is
/// coloured only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>), so a pipe, a file or the journal never gets escape sequences.
fn init_logging(args: &Args) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // A daemon's journal shows its passes; a one-shot command stays quiet unless asked.
    let daemon = matches!(args.command, Command::Run { once: false, .. });
    let default = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) if daemon => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("CERTKEEPER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour_logs(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    let _ = match args.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .without_time()
            .fmt_fields(logfmt::PlainFields)
            .try_init(),
    };
}

/// Whether text logs get colours: only on a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string.
fn colour_logs(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{colour_logs, subcommand_of};
    use std::ffi::OsStr;

    #[test]
    fn the_subcommand_is_found_past_global_options_and_their_values() {
        let sub =
            |args: &[&str]| subcommand_of(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(sub(&["check"]).as_deref(), Some("check"));
        assert_eq!(
            sub(&["--config", "c.yaml", "verify"]).as_deref(),
            Some("verify")
        );
        assert_eq!(
            sub(&["--config", "renew", "check"]).as_deref(),
            Some("check")
        );
        assert_eq!(
            sub(&["--config=c", "-vv", "check"]).as_deref(),
            Some("check")
        );
        assert_eq!(
            sub(&["--log-format", "bogus", "verify"]).as_deref(),
            Some("verify")
        );
        assert_eq!(sub(&["-q", "renew", "check"]).as_deref(), Some("renew"));
        assert_eq!(sub(&["--config"]), None);
        assert_eq!(sub(&["bogus"]), None);
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some(OsStr::new(""))));
        assert!(!colour_logs(true, Some(OsStr::new("1"))));
        assert!(!colour_logs(false, None));
    }
}
