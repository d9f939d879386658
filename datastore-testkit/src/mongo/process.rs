//! Small process helpers built on `std` and standard shell tools only
//! (no libc): signals, liveness checks, output capture.

use std::sync::{Arc, Mutex};

/// Bytes of output kept by an [`OutputTail`].
const TAIL_BYTES: usize = 16 * 1024;

pub(crate) use crate::process::{process_alive, send_signal, text_tail, wait_gone};

/// The last [`TAIL_BYTES`] bytes of a stream, filled by a background thread
/// line by line (see [`OutputTail::drain`]). Reading the stream to its end also keeps the
/// writer from blocking on a full pipe.
#[derive(Clone, Default)]
pub(crate) struct OutputTail {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl OutputTail {
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
}
