//! Small process helpers built on `std` and standard shell tools only
//! (no libc): signals, liveness checks, output capture, timeouts.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of output kept by an [`OutputTail`].
const TAIL_BYTES: usize = 16 * 1024;

pub(crate) use harness_process::{describe, process_alive, send_signal, text_tail, wait_gone};

/// The last [`TAIL_BYTES`] bytes of a stream, filled by a background thread
/// line by line (see [`OutputTail::drain`]). Reading the stream to its end also keeps the
/// writer from blocking on a full pipe.
#[derive(Clone, Default)]
pub(crate) struct OutputTail {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl OutputTail {
    /// Reads `stream` to its end on a new thread, keeping the tail.
    pub(crate) fn drain(stream: impl Read + Send + 'static) -> (OutputTail, JoinHandle<()>) {
        let tail = OutputTail::default();
        let writer = tail.clone();
        let handle = std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => writer.push(&line),
                }
            }
        });
        (tail, handle)
    }

    /// Appends `data`, dropping the oldest bytes beyond [`TAIL_BYTES`].
    pub(crate) fn push(&self, data: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        bytes.extend_from_slice(data);
        if bytes.len() > TAIL_BYTES {
            let excess = bytes.len() - TAIL_BYTES;
            bytes.drain(..excess);
        }
    }

    /// The last `lines` lines collected so far.
    pub(crate) fn lines(&self, lines: usize) -> String {
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        text_tail(&String::from_utf8_lossy(&bytes), lines)
    }
}

/// Output of a command run by [`run_with_timeout`].
pub(crate) struct Captured {
    /// Exit status.
    pub(crate) status: ExitStatus,
    /// Everything written to stdout (lossy UTF-8).
    pub(crate) stdout: String,
    /// The tail of stderr (lossy UTF-8).
    pub(crate) stderr: String,
}

/// Runs `cmd` with stdin closed and stdout/stderr captured, killing it if it
/// has not finished after `timeout`. `Ok(None)` means it timed out.
pub(crate) fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> std::io::Result<Option<Captured>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (stdout, stdout_thread) = match child.stdout.take() {
        Some(stream) => OutputTail::drain(stream),
        None => (OutputTail::default(), std::thread::spawn(|| {})),
    };
    let (stderr, stderr_thread) = match child.stderr.take() {
        Some(stream) => OutputTail::drain(stream),
        None => (OutputTail::default(), std::thread::spawn(|| {})),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            // The reader threads end once every writer has closed the pipes.
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = stdout_thread.join();
    let _ = stderr_thread.join();
    Ok(Some(Captured {
        status,
        stdout: stdout.lines(usize::MAX),
        stderr: stderr.lines(40),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_tail_is_bounded() {
        let tail = OutputTail::default();
        for i in 0..10_000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        let text = tail.lines(usize::MAX);
        assert!(text.len() <= TAIL_BYTES, "{}", text.len());
        assert!(text.ends_with("line 9999\n"), "{text}");
        assert_eq!(tail.lines(1), "line 9999\n");
    }

    #[test]
    fn run_with_timeout_captures_and_times_out() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap()
        .expect("finishes");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");

        let started = Instant::now();
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "exec sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(out.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
