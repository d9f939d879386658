//! Writing a command's output to stdout without panicking when the reader has gone (`| head`).

use std::io::Write;

/// Writes `text` to stdout. A closed pipe ends the output quietly (the reader wanted no
/// more); other write errors are returned.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}
