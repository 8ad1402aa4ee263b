//! The `certkeeper` binary: everything happens in [`certkeeper::cli::run`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(certkeeper::cli::run())
}
