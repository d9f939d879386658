//! `--log <filter>` (or `RUST_LOG`): tracing output on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a stderr fmt subscriber when `--log` or `RUST_LOG` asks for one.
pub fn init(flag: Option<&str>) {
    let filter = match flag {
        Some(f) => EnvFilter::try_new(f),
        None => match std::env::var("RUST_LOG") {
            Ok(f) if !f.trim().is_empty() => EnvFilter::try_new(f),
            _ => return,
        },
    };
    match filter {
        Ok(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        Err(e) => eprintln!("warning: ignoring the log filter: {e}"),
    }
}
