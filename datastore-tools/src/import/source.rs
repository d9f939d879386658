//! Reading a `mongoexport` file with constant memory: JSON lines, or one JSON array
//! (`--jsonArray`, detected by its leading `[`), each document sent on as soon as it is read.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// The longest line (or `--jsonArray` element) read: MongoDB's 16 MiB document limit three
/// times over, room for Extended JSON's wrappers and escapes. A longer line is rejected
/// with its number and skipped without being held; the import goes on.
pub const MAX_LINE_BYTES: usize = 48 * 1024 * 1024;

/// How long opening the file may wait: a FIFO (a pipe, `<(zcat …)`) opens only once its
/// writer does.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// What reading allows.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The longest line or array element, in bytes.
    pub max_line: usize,
    /// How long opening may wait for a writer.
    pub open_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_line: MAX_LINE_BYTES,
            open_timeout: OPEN_TIMEOUT,
        }
    }
}

/// Reads `path` (in a blocking thread), sends each document through `convert` to `out`, and
/// counts the bytes read in `progress`. Stops early when the receiver is gone. An error that
/// makes the rest unreadable (a broken JSON array, an I/O error) is returned.
pub fn read<T>(
    path: &Path,
    convert: impl Fn(Result<Value, String>) -> T,
    out: mpsc::Sender<Item<T>>,
    progress: Arc<AtomicU64>,
) -> io::Result<()> {
    read_within(path, Bounds::default(), convert, out, progress)
}

/// [`read`] within `bounds`.
pub fn read_within<T>(
    path: &Path,
    bounds: Bounds,
    convert: impl Fn(Result<Value, String>) -> T,
    out: mpsc::Sender<Item<T>>,
    progress: Arc<AtomicU64>,
) -> io::Result<()> {
    let file = open(path, bounds.open_timeout)?;
    let element_start = Arc::new(AtomicU64::new(0));
    let mut reader = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: file,
            progress: progress.clone(),
            element_start: element_start.clone(),
            max_element: bounds.max_line as u64,
        },
    );
    let array = loop {
        let buf = reader.fill_buf()?;
        // mongoexport on some platforms starts the file with a UTF-8 byte-order mark.
        let start = if buf.starts_with(UTF8_BOM) {
            UTF8_BOM.len()
        } else {
            0
        };
        match buf[start..].iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let is_array = buf[start + i] == b'[';
                reader.consume(start);
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
            read: &progress,
            element_start: &element_start,
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
    // Lines are bounded here; the array check above counts from each element's start.
    reader.get_mut().max_element = u64::MAX;
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        // Bytes, not a String: a line that is not UTF-8 is that line's rejection, not the end.
        let limit = bounds.max_line as u64 + 1;
        if (&mut reader).take(limit).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
        let too_long = line.len() > bounds.max_line && line.last() != Some(&b'\n');
        let doc = if too_long {
            line = Vec::new();
            Err(format!(
                "longer than {} bytes (MongoDB's 16 MiB document limit, in Extended JSON): skipped",
                bounds.max_line
            ))
        } else if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        } else {
            serde_json::from_slice(&line).map_err(|e| format!("not JSON: {e}"))
        };
        if out
            .blocking_send((Position::Line(number), convert(doc)))
            .is_err()
        {
            return Ok(());
        }
        if too_long {
            skip_line(&mut reader, &|| out.is_closed())?;
        }
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Opens `path`, waiting at most `timeout`: opening a FIFO blocks until a writer opens it,
/// so the open runs on a thread of its own, left behind (blocked, holding nothing) if no
/// writer ever comes.
fn open(path: &Path, timeout: Duration) -> io::Result<File> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("import-open".into())
        .spawn(move || {
            let _ = tx.send(File::open(owned));
        })?;
    match rx.recv_timeout(timeout) {
        Ok(opened) => opened,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "could not be opened within {timeout:?}: it is a FIFO or pipe that no writer has \
                 opened; start the writer first"
            ),
        )),
    }
}

/// Reads past the rest of the current line (to its newline, or the end), holding nothing;
/// stops early once `stopped` (nobody reads what comes next).
fn skip_line(reader: &mut impl BufRead, stopped: &dyn Fn() -> bool) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() || stopped() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// A reader that counts what it reads, and fails once an array element runs past
/// `max_element` bytes from where it started (so one huge element is never held whole).
struct Counting<R> {
    inner: R,
    progress: Arc<AtomicU64>,
    element_start: Arc<AtomicU64>,
    max_element: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let since = self.progress.load(Ordering::Relaxed)
            - self
                .element_start
                .load(Ordering::Relaxed)
                .min(self.progress.load(Ordering::Relaxed));
        if since > self.max_element {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a document is longer than {} bytes (MongoDB's 16 MiB document limit, in \
                     Extended JSON)",
                    self.max_element
                ),
            ));
        }
        let n = self.inner.read(buf)?;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Sends each element of a JSON array as it is parsed.
struct Elements<'a, T, F> {
    out: &'a mpsc::Sender<Item<T>>,
    convert: &'a F,
    /// Bytes read so far.
    read: &'a AtomicU64,
    /// Bytes read when the element being parsed started (roughly: reads come in blocks).
    element_start: &'a AtomicU64,
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
            self.element_start
                .store(self.read.load(Ordering::Relaxed), Ordering::Relaxed);
            let item = (Position::Element(number), (self.convert)(Ok(doc)));
            if self.out.blocking_send(item).is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("import-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    type Sent = Vec<Item<Result<Value, String>>>;

    /// What reading `path` within `bounds` sends, as `(position, Ok(json) | Err(why))`.
    fn read_all(path: &Path, bounds: Bounds) -> (Sent, io::Result<()>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let done = read_within(path, bounds, |d| d, tx, Arc::new(AtomicU64::new(0)));
        let mut items = Vec::new();
        while let Ok(item) = rx.try_recv() {
            items.push(item);
        }
        (items, done)
    }

    fn small(max_line: usize) -> Bounds {
        Bounds {
            max_line,
            open_timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        for text in [
            &b"\xEF\xBB\xBF{\"a\": 1}\n"[..],
            b"\xEF\xBB\xBF[{\"a\": 1}]",
        ] {
            let (items, done) = read_all(&file("bom.json", text), Bounds::default());
            done.expect("read");
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].1, Ok(serde_json::json!({"a": 1})));
        }
    }

    #[test]
    fn a_line_too_long_is_rejected_alone_and_not_held() {
        let mut text = b"{\"a\": 1}\n{\"b\": \"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 5_000));
        text.extend(b"\"}\n{\"c\": 3}\n");
        let (items, done) = read_all(&file("long.json", &text), small(1_000));
        done.expect("read");
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].0, Position::Line(2));
        let why = items[1].1.clone().unwrap_err();
        assert!(why.contains("longer than 1000 bytes"), "{why}");
        assert_eq!(
            items[2],
            (Position::Line(3), Ok(serde_json::json!({"c": 3})))
        );
    }

    #[test]
    fn an_array_element_too_long_stops_the_read_with_a_reason() {
        let mut text = b"[{\"a\": 1}, {\"b\": \"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 300_000));
        text.extend(b"\"}]");
        let (_, done) = read_all(&file("long-array.json", &text), small(100_000));
        let e = done.unwrap_err();
        assert!(e.to_string().contains("longer than 100000 bytes"), "{e}");
    }

    #[test]
    fn a_fifo_without_a_writer_is_an_error_not_a_hang() {
        let fifo = std::env::temp_dir().join(format!("import-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("mkfifo").success());
        let (_, done) = read_all(&fifo, small(1_000));
        let e = done.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("no writer"), "{e}");
        let _ = std::fs::remove_file(&fifo);
    }

    #[test]
    fn an_endless_file_without_newlines_is_read_in_bounded_memory() {
        // /dev/zero: one endless line. Stop after a few rejected "lines" of the bound.
        let (tx, mut rx) = mpsc::channel(4);
        let reader = std::thread::spawn(move || {
            read_within(
                Path::new("/dev/zero"),
                small(1 << 20),
                |d| d,
                tx,
                Arc::new(AtomicU64::new(0)),
            )
        });
        // The first line is rejected once it passes the bound; nothing else arrives, so
        // dropping the receiver is how the caller stops the read.
        let first = rx.blocking_recv().expect("a rejection");
        assert_eq!(first.0, Position::Line(1));
        assert!(first.1.unwrap_err().contains("longer than"));
        drop(rx);
        reader.join().expect("the reader").expect("read");
    }
}
