//! `certkeeper completions SHELL` and `certkeeper man`: the shell completion scripts
//! (clap_complete) and the roff man page (clap_mangen), both generated from the same clap
//! definition as the parser, so they never drift from it. Both write to stdout and need no
//! config file.

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Args, print};

/// The binary name the scripts complete and the man page is titled with.
const BIN_NAME: &str = "certkeeper";

/// Prints the completion script for `shell`; exit 0.
pub(crate) fn completions(shell: Shell) -> u8 {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), BIN_NAME, &mut out);
    u8::from(!print(&String::from_utf8_lossy(&out)))
}

/// Prints the man page (section 1, roff); exit 0, or 1 when it cannot be rendered.
pub(crate) fn man() -> u8 {
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Args::command()).render(&mut out) {
        eprintln!("certkeeper: cannot render the man page: {e}");
        return 1;
    }
    u8::from(!print(&String::from_utf8_lossy(&out)))
}
