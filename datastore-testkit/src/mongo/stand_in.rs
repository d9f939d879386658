//! Starting and stopping a stand-in server ([`StandIn`]) under a watchdog.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mongo::process::{self, OutputTail};
use crate::mongo::uri;
use crate::mongo::StandIn;
use crate::HarnessError;

/// How long to wait for the server's ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the stand-in may take to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of output reported in errors.
const LOG_TAIL_LINES: usize = 40;
/// Line the watchdog prints with the stand-in's pid (before anything else
/// it prints; the stand-in's own lines may come before or after it).
const PID_PREFIX: &str = "MONGO_HARNESS_SERVER_PID=";

/// Shell watchdog that owns the stand-in process.
///
/// Arguments: `$1` owner pid, then the server command line. It runs the
/// server in the background, reports its pid on stdout, detaches its own
/// stdout/stderr (so only the server holds the pipes and they reach EOF when
/// the server exits) and polls once a second. When the owner process has gone
/// away it sends SIGTERM, then SIGKILL after 5 s. When the server exits on
/// its own the watchdog exits with the server's status.
const WATCHDOG_SCRIPT: &str = r#"owner=$1; shift
"$@" &
srv=$!
echo "MONGO_HARNESS_SERVER_PID=$srv"
exec >/dev/null 2>&1
while kill -0 "$owner" 2>/dev/null && kill -0 "$srv" 2>/dev/null; do sleep 1; done
if kill -0 "$owner" 2>/dev/null; then wait "$srv"; exit $?; fi
kill -TERM "$srv" 2>/dev/null
n=0
while kill -0 "$srv" 2>/dev/null && [ "$n" -lt 5 ]; do sleep 1; n=$((n + 1)); done
kill -KILL "$srv" 2>/dev/null
wait
"#;

/// A running stand-in server ([`StandIn`]): SecantusDB or jongodb, started as a single-node
/// replica set on `127.0.0.1` and a free port, with nothing stored on disk.
///
/// See [`StandIn::locate`] for where the binary is looked for and
/// [`StandIn::install_command`] for how to install it.
///
/// The server is started through a small `sh` watchdog. Dropping the value
/// sends SIGTERM (SIGKILL after 5 s) and reaps the processes; if the owning
/// process dies without dropping it (for example a `static`), the watchdog
/// stops the server within about a second.
///
/// Each instance starts empty and its data is gone when it stops.
pub struct StandInServer {
    kind: StandIn,
    uri: String,
    port: u16,
    /// The server's pid.
    pid: u32,
    binary: PathBuf,
    /// The `sh` watchdog (leader of its own process group).
    watchdog: Child,
    /// Set once the watchdog has been reaped.
    watchdog_reaped: bool,
    /// The server's output, but for its ready line.
    output: OutputTail,
}

/// What the output reader threads report.
enum Event {
    /// The watchdog's `MONGO_HARNESS_SERVER_PID=` line.
    Pid(u32),
    /// The server's ready line, as its URI.
    Uri(String),
    /// Stdout reached its end (the server exited or closed it).
    Eof,
}

/// A launched watchdog whose server is not known to be ready yet; stops
/// everything when dropped.
struct Launch {
    watchdog: Option<Child>,
    pid: Option<u32>,
    output: OutputTail,
    stderr_thread: Option<JoinHandle<()>>,
}

impl StandInServer {
    /// Starts the stand-in chosen by [`StandIn::from_env`] (SecantusDB unless
    /// `DATASTORE_TEST_MONGODB_STAND_IN` says otherwise).
    pub fn start() -> Result<StandInServer, HarnessError> {
        Self::start_kind(StandIn::from_env()?)
    }

    /// Locates `kind`'s binary ([`StandIn::locate`]) and starts it, waiting
    /// until it says it is ready (at most 30 s).
    pub fn start_kind(kind: StandIn) -> Result<StandInServer, HarnessError> {
        Self::start_binary(kind, &kind.locate()?)
    }

    /// Starts `kind` from `binary` and waits (at most 30 s) for its ready
    /// line (SecantusDB: `secantus listening on 127.0.0.1:PORT` in its log;
    /// jongodb: `JONGODB_URI=<uri>` on stdout).
    ///
    /// On failure the error contains the tail of the server's output.
    pub fn start_binary(kind: StandIn, binary: &Path) -> Result<StandInServer, HarnessError> {
        start_with_timeout(kind, binary, READY_TIMEOUT)
    }

    /// Which stand-in this is.
    pub fn kind(&self) -> StandIn {
        self.kind
    }

    /// The server's URI, for example
    /// `mongodb://127.0.0.1:38291/?replicaSet=secantus`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The TCP port the server listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `lines` lines the server wrote (but for its ready line), for
    /// diagnosing a failing test; kept in memory, at most 16 KiB.
    pub fn output_tail(&self, lines: usize) -> String {
        self.output.lines(lines)
    }

    /// SIGTERM to the server, SIGKILL after [`STOP_TIMEOUT`], then kills
    /// and reaps the watchdog. Never panics; idempotent.
    fn stop(&mut self) {
        if self.watchdog_reaped {
            return;
        }
        stop_processes(&mut self.watchdog, Some(self.pid));
        self.watchdog_reaped = true;
    }
}

/// Stops the stand-in `pid` (if known and alive: SIGTERM, SIGKILL after
/// [`STOP_TIMEOUT`]), then kills whatever is left in the watchdog's process
/// group and reaps the watchdog.
fn stop_processes(watchdog: &mut Child, pid: Option<u32>) {
    if let Some(pid) = pid.filter(|pid| process::process_alive(*pid)) {
        process::send_signal("TERM", &pid.to_string());
        if !process::wait_gone(pid, STOP_TIMEOUT) {
            process::send_signal("KILL", &pid.to_string());
            process::wait_gone(pid, Duration::from_secs(2));
        }
    }
    // The `sh` itself, its `sleep`, the stand-in if its pid was never
    // reported, and anything the stand-in started. The group id stays
    // reserved while the unreaped watchdog exists (even as a zombie), so this
    // cannot hit an unrelated group.
    process::send_signal("KILL", &format!("-{}", watchdog.id()));
    let _ = watchdog.kill();
    let _ = watchdog.wait();
}

/// [`StandInServer::start_binary`] with a configurable readiness timeout.
fn start_with_timeout(
    kind: StandIn,
    binary: &Path,
    timeout: Duration,
) -> Result<StandInServer, HarnessError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("mongo-harness-watchdog")
        .arg(std::process::id().to_string())
        .arg(binary)
        .args(kind.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Own process group: terminal signals (Ctrl-C) go to the test process
    // only, and the whole watchdog can be killed as a group.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);

    let mut watchdog = cmd.spawn().map_err(|e| {
        HarnessError::io(
            format!(
                "spawning the {kind} stand-in watchdog (`sh`) for {}",
                binary.display()
            ),
            e,
        )
    })?;
    let output = OutputTail::default();
    let (sender, events) = mpsc::channel();
    // The ready line may come on either stream (SecantusDB logs to stderr).
    let stderr_thread = watchdog.stderr.take().map(|stderr| {
        let (output, sender) = (output.clone(), sender.clone());
        std::thread::spawn(move || read_events(stderr, kind, &output, &sender, false))
    });
    let stdout = watchdog.stdout.take();
    let mut launch = Launch {
        watchdog: Some(watchdog),
        pid: None,
        output: output.clone(),
        stderr_thread,
    };
    let Some(stdout) = stdout else {
        return Err(launch.fail("the watchdog has no stdout pipe"));
    };
    std::thread::spawn(move || read_events(stdout, kind, &output, &sender, true));

    let deadline = Instant::now() + timeout;
    let mut uri = None;
    while uri.is_none() || launch.pid.is_none() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(remaining) {
            Ok(Event::Pid(pid)) => launch.pid = Some(pid),
            Ok(Event::Uri(line)) => uri = Some(line),
            Ok(Event::Eof) | Err(RecvTimeoutError::Disconnected) => {
                let status = launch.wait_watchdog(Duration::from_secs(3));
                return Err(launch.fail(format!(
                    "the {kind} stand-in ({}) exited before printing {}{}",
                    binary.display(),
                    kind.ready_line(),
                    status.map(|s| format!(" ({s})")).unwrap_or_default()
                )));
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(launch.fail(format!(
                    "the {kind} stand-in ({}) did not print {} within {} s",
                    binary.display(),
                    kind.ready_line(),
                    timeout.as_secs_f64()
                )));
            }
        }
    }
    let uri = uri.unwrap_or_default();
    let Some(port) = uri::port_of(&uri) else {
        return Err(launch.fail(format!(
            "the {kind} stand-in printed a URI without a usable port: `{uri}`"
        )));
    };
    let (Some(watchdog), Some(pid)) = (launch.watchdog.take(), launch.pid) else {
        unreachable!("watchdog and pid are set at this point");
    };
    Ok(StandInServer {
        kind,
        uri,
        port,
        pid,
        binary: binary.to_path_buf(),
        watchdog,
        watchdog_reaped: false,
        output: launch.output.clone(),
    })
}

/// Reads one of the watchdog's streams to its end: reports the pid and
/// ready lines as [`Event`]s, appends other lines to `output`, and (for
/// stdout, `report_eof`) sends [`Event::Eof`] at the end. Send errors (the
/// receiver is gone once the server is ready) are ignored: the stream is
/// still drained to its end.
fn read_events(
    stream: impl std::io::Read,
    kind: StandIn,
    output: &OutputTail,
    sender: &Sender<Event>,
    report_eof: bool,
) {
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        if let Some(pid) = line
            .trim()
            .strip_prefix(PID_PREFIX)
            .and_then(|pid| pid.parse().ok())
        {
            let _ = sender.send(Event::Pid(pid));
        } else if let Some(uri) = kind.ready_uri(&line) {
            let _ = sender.send(Event::Uri(uri));
        } else {
            output.push(&raw);
        }
    }
    if report_eof {
        let _ = sender.send(Event::Eof);
    }
}

impl Launch {
    /// Waits up to `timeout` for the watchdog to exit on its own; its status.
    fn wait_watchdog(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let watchdog = self.watchdog.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match watchdog.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// Stops everything and builds a [`HarnessError::StartFailed`] with
    /// `message` and the output tail.
    fn fail(&mut self, message: impl Into<String>) -> HarnessError {
        self.stop();
        // Everything that wrote to stderr is gone: let the reader finish.
        if let Some(handle) = self.stderr_thread.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        HarnessError::start_failed(
            crate::Server::Mongo,
            message,
            self.output.lines(LOG_TAIL_LINES),
        )
    }

    /// Stops the watchdog and stand-in, if still owned.
    fn stop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            stop_processes(&mut watchdog, self.pid);
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for StandInServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for StandInServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandInServer")
            .field("kind", &self.kind)
            .field("uri", &self.uri)
            .field("pid", &self.pid)
            .field("binary", &self.binary)
            .field("running", &!self.watchdog_reaped)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn accepts_connections(port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    }

    /// Writes an executable script to a fresh temporary path.
    fn fake_binary(body: &str) -> PathBuf {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mongo-harness-fake-jongodb-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The real binary of the chosen stand-in, or `None` (with a note) when it is not
    /// installed.
    fn real_binary() -> Option<(StandIn, PathBuf)> {
        let kind = StandIn::from_env().unwrap();
        match kind.locate() {
            Ok(path) => Some((kind, path)),
            Err(err) => {
                eprintln!("NOTE: skipping, the {kind} stand-in is not installed: {err}");
                None
            }
        }
    }

    #[test]
    fn reader_reports_pid_and_uri_and_keeps_other_lines() {
        let input = b"MONGO_HARNESS_SERVER_PID=4242\nbooting\n\
                      JONGODB_URI=mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0\nbye\n";
        let output = OutputTail::default();
        let (sender, receiver) = mpsc::channel();
        read_events(&input[..], StandIn::Jongodb, &output, &sender, true);
        let events: Vec<Event> = receiver.try_iter().collect();
        assert!(matches!(events[0], Event::Pid(4242)));
        assert!(
            matches!(&events[1], Event::Uri(u) if u == "mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0")
        );
        assert!(matches!(events[2], Event::Eof));
        assert_eq!(events.len(), 3);
        assert_eq!(output.lines(10), "booting\nbye\n");
    }

    #[test]
    fn early_exit_is_reported_with_output_tail() {
        let fake = fake_binary(
            "#!/bin/sh\necho \"preparing\"\necho \"fatal: fake stand-in refuses to start\" >&2\nexit 3\n",
        );
        let started = Instant::now();
        let err = StandInServer::start_binary(StandIn::SecantusDb, &fake).unwrap_err();
        eprintln!("failed start took {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(10));
        match &err {
            HarnessError::StartFailed {
                message, log_tail, ..
            } => {
                assert!(message.contains("exited before printing"), "{message}");
                assert!(message.contains("exit status: 3"), "{message}");
                assert!(log_tail.contains("fake stand-in refuses"), "{log_tail}");
                assert!(log_tail.contains("preparing"), "{log_tail}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        std::fs::remove_file(fake).unwrap();
    }

    #[test]
    fn ready_timeout_stops_the_process_group() {
        // The fake starts a child (`sleep` with a unique argument) and never
        // becomes ready; both must be gone after the failed start.
        let marker = format!("{}.{}", 1000 + line!(), std::process::id());
        let fake = fake_binary(&format!(
            "#!/bin/sh\necho \"still thinking\" >&2\nsleep {marker}\n"
        ));
        let err =
            start_with_timeout(StandIn::Jongodb, &fake, Duration::from_millis(500)).unwrap_err();
        match &err {
            HarnessError::StartFailed {
                message, log_tail, ..
            } => {
                assert!(message.contains("did not print"), "{message}");
                assert!(log_tail.contains("still thinking"), "{log_tail}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        std::fs::remove_file(&fake).unwrap();
        let needle = format!("sleep {marker}");
        let survivors: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                let pid = e.file_name().to_string_lossy().parse::<u32>();
                pid.map(process::process_alive).unwrap_or(false)
            })
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&needle))
            .collect();
        assert!(survivors.is_empty(), "{survivors:?}");
    }

    #[test]
    fn start_and_drop() {
        let Some((kind, binary)) = real_binary() else {
            return;
        };
        let started = Instant::now();
        let server = StandInServer::start_binary(kind, &binary).expect("stand-in starts");
        eprintln!("StandInServer::start() took {:?}", started.elapsed());
        assert!(
            server
                .uri()
                .starts_with(&format!("mongodb://127.0.0.1:{}/", server.port())),
            "{}",
            server.uri()
        );
        assert!(process::process_alive(server.pid()));
        assert!(accepts_connections(server.port()));
        assert!(format!("{server:?}").contains(server.uri()));
        eprintln!("stand-in output so far: {:?}", server.output_tail(10));

        let (pid, port) = (server.pid(), server.port());
        let stopping = Instant::now();
        drop(server);
        eprintln!("drop took {:?}", stopping.elapsed());
        assert!(!process::process_alive(pid), "stand-in {pid} still running");
        assert!(!accepts_connections(port), "port {port} still accepts");
    }

    /// Environment variable that turns [`watchdog_child`] into a real test
    /// body (it is only meant to run as a subprocess).
    const CHILD_ENV: &str = "MONGO_HARNESS_WATCHDOG_CHILD";

    /// Subprocess body for [`watchdog_stops_server_when_owner_exits`]:
    /// starts a stand-in, reports it, and exits without dropping it.
    #[test]
    #[ignore = "helper run as a subprocess by watchdog_stops_server_when_owner_exits"]
    fn watchdog_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let server = StandInServer::start().expect("stand-in starts");
        println!("WATCHDOG-CHILD {} {}", server.port(), server.pid());
        std::mem::forget(server);
        std::process::exit(0);
    }

    #[test]
    fn watchdog_stops_server_when_owner_exits() {
        let Some((kind, binary)) = real_binary() else {
            return;
        };
        let fields = crate::process::run_watchdog_child(
            "mongo::stand_in::tests::watchdog_child",
            &[
                (CHILD_ENV, "1".as_ref()),
                (StandIn::SELECT_ENV, kind.name().as_ref()),
                (kind.bin_env(), binary.as_os_str()),
            ],
        );
        let exited = Instant::now();

        let port: u16 = fields[0].parse().unwrap();
        let pid: u32 = fields[1].parse().unwrap();
        assert!(pid > 0);

        assert!(
            process::wait_gone(pid, Duration::from_secs(10)),
            "orphaned stand-in {pid}"
        );
        eprintln!(
            "watchdog stopped the stand-in {:?} after the owner exited",
            exited.elapsed()
        );
        assert!(exited.elapsed() < Duration::from_secs(5));
        assert!(!accepts_connections(port));
    }
}
