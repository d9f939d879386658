//! Reading a `mongoexport` file with constant memory: JSON lines, or one JSON array
//! (`--jsonArray`, detected by its leading `[`), each document sent on as soon as it is read.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use tokio::sync::mpsc;

/// Where a document was in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Line N of a JSON-lines file (from 1).
    Line(u64),
    /// Element N of a JSON array (from 1).
    Element(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Element(n) => write!(f, "document {n}"),
        }
    }
}

/// One document, as `convert` made it from what was read (or why it could not be read).
pub type Item<T> = (Position, T);

/// Reads `path` (in a blocking thread), sends each document through `convert` to `out`, and
/// counts the bytes read in `progress`. Stops early when the receiver is gone. An error that
/// makes the rest unreadable (a broken JSON array, an I/O error) is returned.
pub fn read<T>(
    path: &Path,
    convert: impl Fn(Result<Value, String>) -> T,
    out: mpsc::Sender<Item<T>>,
    progress: Arc<AtomicU64>,
) -> io::Result<()> {
    let file = File::open(path)?;
    let mut reader = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: file,
            progress,
        },
    );
    let array = loop {
        let buf = reader.fill_buf()?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let is_array = buf[i] == b'[';
                break is_array;
            }
            None if buf.is_empty() => return Ok(()),
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    if array {
        let mut de = serde_json::Deserializer::from_reader(reader);
        de.deserialize_seq(Elements {
            out: &out,
            convert: &convert,
        })
        .and_then(|()| de.end())
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the JSON array is broken: {e}"),
            )
        })?;
        return Ok(());
    }
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        // Bytes, not a String: a line that is not UTF-8 is that line's rejection, not the end.
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let doc = serde_json::from_slice(&line).map_err(|e| format!("not JSON: {e}"));
        if out
            .blocking_send((Position::Line(number), convert(doc)))
            .is_err()
        {
            return Ok(());
        }
    }
}

/// A reader that counts what it reads.
struct Counting<R> {
    inner: R,
    progress: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Sends each element of a JSON array as it is parsed.
struct Elements<'a, T, F> {
    out: &'a mpsc::Sender<Item<T>>,
    convert: &'a F,
}

impl<'de, T, F: Fn(Result<Value, String>) -> T> Visitor<'de> for Elements<'_, T, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of documents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut number = 0;
        while let Some(doc) = seq.next_element::<Value>()? {
            number += 1;
            let item = (Position::Element(number), (self.convert)(Ok(doc)));
            if self.out.blocking_send(item).is_err() {
                break;
            }
        }
        Ok(())
    }
}
