//! The jongodb stand-in: an in-memory, MongoDB-wire-compatible server
//! shipped as a self-contained binary in an npm package.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::{self, OutputTail};
use crate::uri;
use crate::HarnessError;

/// How long to wait for the stand-in to print its `JONGODB_URI=` line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the stand-in may take to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of output reported in errors.
const LOG_TAIL_LINES: usize = 40;
/// Path of the binary inside an npm install prefix.
const BIN_IN_PREFIX: &str = "node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb";
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

/// A running jongodb stand-in: an in-memory server that speaks the MongoDB
/// wire protocol, started as a single-node replica set (so transactions and
/// change streams are available) on `127.0.0.1` and a free port.
///
/// The binary comes from the npm package
/// `@jongodb/memory-server-bin-linux-x64-gnu@0.1.6`; see
/// [`StandInServer::locate`] for where it is looked for and
/// [`StandInServer::INSTALL_COMMAND`] for how to install it.
///
/// The server is started through a small `sh` watchdog. Dropping the value
/// sends SIGTERM (SIGKILL after 5 s) and reaps the processes; if the owning
/// process dies without dropping it (for example a `static`), the watchdog
/// stops the server within about a second.
///
/// The stand-in keeps everything in memory: each instance starts empty and
/// its data is gone when it stops.
pub struct StandInServer {
    uri: String,
    port: u16,
    /// The stand-in's pid.
    pid: u32,
    binary: PathBuf,
    /// The `sh` watchdog (leader of its own process group).
    watchdog: Child,
    /// Set once the watchdog has been reaped.
    watchdog_reaped: bool,
    /// Stderr and unrecognised stdout lines of the stand-in.
    output: OutputTail,
}

/// What the stdout reader thread reports.
enum Event {
    /// The watchdog's `MONGO_HARNESS_SERVER_PID=` line.
    Pid(u32),
    /// The stand-in's `JONGODB_URI=` line.
    Uri(String),
    /// Stdout reached its end (the stand-in exited or closed it).
    Eof,
}

/// A launched watchdog whose stand-in is not known to be ready yet; stops
/// everything when dropped.
struct Launch {
    watchdog: Option<Child>,
    pid: Option<u32>,
    output: OutputTail,
    stderr_thread: Option<JoinHandle<()>>,
}

impl StandInServer {
    /// Environment variable with the path of the `jongodb` binary (absolute,
    /// or relative to the working directory); when set and non-empty it is
    /// the only place looked at.
    pub const BIN_ENV: &'static str = "JONGODB_BIN";

    /// The npm package (with version) that contains the binary.
    pub const PACKAGE: &'static str = "@jongodb/memory-server-bin-linux-x64-gnu@0.1.6";

    /// Command, run from the workspace root, that installs the binary where
    /// [`StandInServer::locate`] looks by default.
    pub const INSTALL_COMMAND: &'static str =
        "npm install --prefix target/jongodb @jongodb/memory-server-bin-linux-x64-gnu@0.1.6";

    /// Where the binary is looked for when [`StandInServer::BIN_ENV`] is not
    /// set: the file
    ///
    /// ```text
    /// <workspace root>/target/jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb
    /// ```
    ///
    /// (where [`StandInServer::INSTALL_COMMAND`] puts it), the workspace root
    /// being the parent of this crate's directory at compile time.
    pub fn default_binary() -> PathBuf {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = manifest_dir.parent().unwrap_or(manifest_dir);
        workspace.join("target").join("jongodb").join(BIN_IN_PREFIX)
    }

    /// Finds the `jongodb` binary: the path in [`StandInServer::BIN_ENV`]
    /// (`JONGODB_BIN`) if that is set and non-empty, else
    /// [`StandInServer::default_binary`].
    ///
    /// Fails with [`HarnessError::StandInMissing`] (whose message gives the
    /// install command) if the file does not exist. The harness never runs
    /// `npm` itself.
    pub fn locate() -> Result<PathBuf, HarnessError> {
        locate_from(std::env::var_os(Self::BIN_ENV).map(PathBuf::from))
    }

    /// Locates the binary ([`StandInServer::locate`]) and starts it, waiting
    /// until it prints its URI (at most 30 s).
    pub fn start() -> Result<StandInServer, HarnessError> {
        Self::start_binary(&Self::locate()?)
    }

    /// Starts the stand-in from `binary` as
    /// `jongodb --host=127.0.0.1 --port=0 --topology-profile=singleNodeReplicaSet`
    /// and waits (at most 30 s) for its `JONGODB_URI=<uri>` line on stdout.
    ///
    /// On failure the error contains the tail of the stand-in's output.
    pub fn start_binary(binary: &Path) -> Result<StandInServer, HarnessError> {
        start_with_timeout(binary, READY_TIMEOUT)
    }

    /// The URI the stand-in printed, for example
    /// `mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The TCP port the stand-in listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the stand-in.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `lines` lines the stand-in wrote to stderr (and any stdout
    /// lines other than its `JONGODB_URI=` line), for diagnosing a failing
    /// test; kept in memory, at most 16 KiB.
    pub fn output_tail(&self, lines: usize) -> String {
        self.output.lines(lines)
    }

    /// SIGTERM to the stand-in, SIGKILL after [`STOP_TIMEOUT`], then kills
    /// and reaps the watchdog. Never panics; idempotent.
    fn stop(&mut self) {
        if self.watchdog_reaped {
            return;
        }
        stop_processes(&mut self.watchdog, Some(self.pid));
        self.watchdog_reaped = true;
    }
}

/// [`StandInServer::locate`] with the value of `JONGODB_BIN` given.
fn locate_from(from_env: Option<PathBuf>) -> Result<PathBuf, HarnessError> {
    let (path, from_env) = match from_env {
        Some(path) if !path.as_os_str().is_empty() => (path, true),
        _ => (StandInServer::default_binary(), false),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::StandInMissing { path, from_env })
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
fn start_with_timeout(binary: &Path, timeout: Duration) -> Result<StandInServer, HarnessError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("mongo-harness-watchdog")
        .arg(std::process::id().to_string())
        .arg(binary)
        .args([
            "--host=127.0.0.1",
            "--port=0",
            "--topology-profile=singleNodeReplicaSet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Own process group: terminal signals (Ctrl-C) go to the test process
    // only, and the whole watchdog can be killed as a group.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);

    let mut watchdog = cmd.spawn().map_err(|e| {
        HarnessError::io(
            format!(
                "spawning the jongodb stand-in watchdog (`sh`) for {}",
                binary.display()
            ),
            e,
        )
    })?;
    let (output, stderr_thread) = match watchdog.stderr.take() {
        Some(stderr) => {
            let (tail, handle) = OutputTail::drain(stderr);
            (tail, Some(handle))
        }
        None => (OutputTail::default(), None),
    };
    let events = watchdog
        .stdout
        .take()
        .map(|stdout| read_stdout(stdout, output.clone()));
    let mut launch = Launch {
        watchdog: Some(watchdog),
        pid: None,
        output,
        stderr_thread,
    };
    let Some(events) = events else {
        return Err(launch.fail("the watchdog has no stdout pipe"));
    };

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
                    "the jongodb stand-in ({}) exited before printing its {}… line{}",
                    binary.display(),
                    uri::READY_PREFIX,
                    status.map(|s| format!(" ({s})")).unwrap_or_default()
                )));
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(launch.fail(format!(
                    "the jongodb stand-in ({}) did not print its {}… line within {} s",
                    binary.display(),
                    uri::READY_PREFIX,
                    timeout.as_secs_f64()
                )));
            }
        }
    }
    let uri = uri.unwrap_or_default();
    let Some(port) = uri::port_of(&uri) else {
        return Err(launch.fail(format!(
            "the jongodb stand-in printed a URI without a usable port: `{uri}`"
        )));
    };
    let (Some(watchdog), Some(pid)) = (launch.watchdog.take(), launch.pid) else {
        unreachable!("watchdog and pid are set at this point");
    };
    Ok(StandInServer {
        uri,
        port,
        pid,
        binary: binary.to_path_buf(),
        watchdog,
        watchdog_reaped: false,
        output: launch.output.clone(),
    })
}

/// Reads the watchdog's stdout on a new thread: reports the pid and URI
/// lines as [`Event`]s, appends other lines to `output`, and sends
/// [`Event::Eof`] at the end (then the thread ends).
fn read_stdout(stdout: ChildStdout, output: OutputTail) -> Receiver<Event> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || read_events(stdout, &output, &sender));
    receiver
}

/// The loop of [`read_stdout`]. Send errors (the receiver is gone once the
/// server is ready) are ignored: the stream is still drained to its end.
fn read_events(stdout: impl std::io::Read, output: &OutputTail, sender: &Sender<Event>) {
    let mut reader = BufReader::new(stdout);
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
        } else if let Some(uri) = uri::parse_ready_line(&line) {
            let _ = sender.send(Event::Uri(uri.to_string()));
        } else {
            output.push(&raw);
        }
    }
    let _ = sender.send(Event::Eof);
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
        HarnessError::start_failed(message, self.output.lines(LOG_TAIL_LINES))
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
    use std::io::BufRead;
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

    /// The real binary, or `None` (with a note) when it is not installed.
    fn real_binary() -> Option<PathBuf> {
        match StandInServer::locate() {
            Ok(path) => Some(path),
            Err(err) => {
                eprintln!("NOTE: skipping, the jongodb stand-in is not installed: {err}");
                None
            }
        }
    }

    #[test]
    fn default_binary_is_under_workspace_target() {
        let path = StandInServer::default_binary();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert!(workspace.join("Cargo.toml").is_file());
        assert_eq!(
            path,
            workspace.join(
                "target/jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb"
            )
        );
    }

    #[test]
    fn locate_reports_the_path_it_checked() {
        let missing = PathBuf::from("/nonexistent/mongo-harness/jongodb");
        match locate_from(Some(missing.clone())) {
            Err(HarnessError::StandInMissing { path, from_env }) => {
                assert_eq!(path, missing);
                assert!(from_env);
            }
            other => panic!("unexpected {other:?}"),
        }
        // An empty JONGODB_BIN means "not set".
        match locate_from(Some(PathBuf::new())) {
            Ok(path) => assert_eq!(path, StandInServer::default_binary()),
            Err(HarnessError::StandInMissing { path, from_env }) => {
                assert_eq!(path, StandInServer::default_binary());
                assert!(!from_env);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        let fake = fake_binary("#!/bin/sh\n");
        assert_eq!(locate_from(Some(fake.clone())).unwrap(), fake);
        std::fs::remove_file(fake).unwrap();
    }

    #[test]
    fn reader_reports_pid_and_uri_and_keeps_other_lines() {
        let input = b"MONGO_HARNESS_SERVER_PID=4242\nbooting\n\
                      JONGODB_URI=mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0\nbye\n";
        let output = OutputTail::default();
        let (sender, receiver) = mpsc::channel();
        read_events(&input[..], &output, &sender);
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
        let err = StandInServer::start_binary(&fake).unwrap_err();
        eprintln!("failed start took {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(10));
        match &err {
            HarnessError::StartFailed { message, log_tail } => {
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
        let err = start_with_timeout(&fake, Duration::from_millis(500)).unwrap_err();
        match &err {
            HarnessError::StartFailed { message, log_tail } => {
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
        let Some(binary) = real_binary() else { return };
        let started = Instant::now();
        let server = StandInServer::start_binary(&binary).expect("stand-in starts");
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
        let Some(binary) = real_binary() else { return };
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "stand_in::tests::watchdog_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .env(StandInServer::BIN_ENV, &binary)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        // libtest prints `test … ... ` on the same line before the report.
        let line = lines
            .iter()
            .find_map(|l| l.find("WATCHDOG-CHILD ").map(|i| &l[i..]))
            .unwrap_or_else(|| panic!("child did not report its server: {lines:#?}"));
        assert!(child.wait().unwrap().success());
        let exited = Instant::now();

        let fields: Vec<&str> = line.split(' ').collect();
        let port: u16 = fields[1].parse().unwrap();
        let pid: u32 = fields[2].parse().unwrap();
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
