//! `certkeeper run [--metrics-listen ADDR]`: the daemon (see [`crate::daemon`]). Exit 0 when
//! stopped by SIGTERM or SIGINT, 2 when the config or an option is unusable at startup.

use std::net::SocketAddr;
use std::path::Path;

use super::load_config;
use crate::daemon::{self, Settings};

/// Exit code of a config or usage error.
const USAGE: u8 = 2;

/// Runs the daemon until it is stopped.
pub fn run(config_path: &Path, metrics_listen: Option<SocketAddr>) -> u8 {
    let Ok(config) = load_config(config_path) else {
        return USAGE;
    };
    let runtime = match super::runtime(USAGE) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let settings = Settings {
        config_path: config_path.to_owned(),
        metrics_listen,
    };
    let code = match runtime.block_on(daemon::run(config, settings)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("certkeeper: run: {e}");
            USAGE
        }
    };
    // Work that cannot be interrupted (a blocking lock wait, a file read) does not hold the
    // exit up for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}
