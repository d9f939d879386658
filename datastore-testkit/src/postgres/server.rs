//! The throwaway server: directory, initdb, launch through a watchdog,
//! readiness polling, stop and restart.

use std::fmt;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::postgres::binaries::Binaries;
use crate::postgres::process::{self, command_as};
use crate::HarnessError;

/// Address the server listens on.
const HOST: &str = "127.0.0.1";
/// Superuser created by initdb (trust authentication).
const USER: &str = "postgres";
/// How long to wait for a freshly launched server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Launch attempts with fresh ports (the first one plus three retries).
const LAUNCH_ATTEMPTS: usize = 4;
/// Lines of server log reported in errors.
const LOG_TAIL_LINES: usize = 40;

/// Distinguishes directories created by one process within the same
/// nanosecond.
static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Shell watchdog that owns the server process.
///
/// Arguments: `$1` owner pid, `$2` harness directory, `$3` data directory,
/// then the server command line. It runs the server in the background and
/// polls once a second. When the owner process has gone away it performs an
/// immediate shutdown (SIGQUIT to the postmaster, SIGKILL after 10 s) and removes
/// the directory. When the server exits on its own (or is stopped by
/// [`PgServer`]) the watchdog just exits.
///
/// The postmaster pid is taken from `postmaster.pid` because, when running as
/// root, `$!` is the pid of `runuser`, which ignores SIGINT.
const WATCHDOG_SCRIPT: &str = r#"owner=$1; dir=$2; data=$3; shift 3
"$@" &
pg=$!
while kill -0 "$owner" 2>/dev/null && kill -0 "$pg" 2>/dev/null; do sleep 1; done
if ! kill -0 "$owner" 2>/dev/null; then
  pm=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
  if kill -0 "$pg" 2>/dev/null && [ -n "$pm" ]; then kill -QUIT "$pm" 2>/dev/null; fi
  kill -INT "$pg" 2>/dev/null
  n=0
  while kill -0 "$pg" 2>/dev/null && [ "$n" -lt 10 ]; do sleep 1; n=$((n + 1)); done
  if kill -0 "$pg" 2>/dev/null; then
    if [ -n "$pm" ]; then kill -KILL "$pm" 2>/dev/null; fi
    kill -KILL "$pg" 2>/dev/null
  fi
  wait
  rm -rf "$dir"
  exit 0
fi
kill -INT "$pg" 2>/dev/null
wait
"#;

/// A running throwaway PostgreSQL server.
///
/// The cluster lives in a fresh directory under [`std::env::temp_dir`]
/// (`pg-harness-<pid>-<nanos>-<counter>`), listens on `127.0.0.1` on a free
/// port and accepts the `postgres` user without a password.
///
/// Dropping the value stops the server (immediate shutdown: SIGQUIT, so no
/// backend outlives it even mid-statement; SIGKILL to the postmaster and its
/// children after 10 s) and deletes its directory. If the owning process dies
/// without dropping it, a watchdog does the same within about a second.
pub struct PgServer {
    bins: Binaries,
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    as_postgres: bool,
    running: Option<Running>,
}

/// The processes of a launched server.
struct Running {
    /// The `sh` watchdog (leader of its own process group).
    wrapper: Child,
    /// Set once `wrapper` has been reaped.
    wrapper_exited: bool,
    /// The postmaster, once known (from `postmaster.pid`).
    postmaster_pid: Option<u32>,
}

/// Why a launch attempt failed.
struct LaunchFailure {
    error: HarnessError,
    /// The server exited early (e.g. the port was taken): try another port.
    retryable: bool,
}

impl PgServer {
    /// Whether the server binaries [`PgServer::start`] needs are found (`$PG_BIN_DIR`, else
    /// Debian's `/usr/lib/postgresql/*/bin`), so that a tool can install them first.
    pub fn binaries_installed() -> bool {
        crate::postgres::binaries::Binaries::locate().is_ok()
    }

    /// Creates a fresh cluster (initdb) and starts PostgreSQL on a free port,
    /// waiting until it accepts connections.
    ///
    /// When running as root the directory is handed to the `postgres` OS user
    /// and the server runs as that user (via `runuser`).
    pub fn start() -> Result<PgServer, HarnessError> {
        Self::start_with(Binaries::locate()?, |_| Ok(()))
    }

    /// [`PgServer::start`], with `configure` called on the data directory after initdb and
    /// before the first launch (to write `postgresql.conf` settings, `pg_hba.conf`, TLS files).
    /// Files it writes are handed to the server's OS user.
    pub fn start_configured(
        configure: impl FnOnce(&Path) -> Result<(), HarnessError>,
    ) -> Result<PgServer, HarnessError> {
        Self::start_with(Binaries::locate()?, configure)
    }

    /// [`PgServer::start_configured`] with the given binaries.
    fn start_with(
        bins: Binaries,
        configure: impl FnOnce(&Path) -> Result<(), HarnessError>,
    ) -> Result<PgServer, HarnessError> {
        let as_postgres = process::running_as_root();
        let root = create_unique_dir()?;
        // From here on, dropping `server` removes the directory on failure.
        let mut server = PgServer {
            bins,
            data_dir: root.join("data"),
            log_path: root.join("server.log"),
            root,
            port: 0,
            as_postgres,
            running: None,
        };
        if as_postgres {
            process::chown_to_postgres(&server.root)?;
        }
        server.initdb()?;
        configure(&server.data_dir)?;
        if as_postgres {
            process::chown_to_postgres(&server.data_dir)?;
        }

        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(failure) if failure.retryable && attempt < LAUNCH_ATTEMPTS => attempt += 1,
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// The host the server listens on: `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser name: `"postgres"` (no password needed).
    pub fn user(&self) -> &str {
        USER
    }

    /// Connection URL for `database`:
    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        crate::postgres::url::with_database(
            &format!("postgres://{USER}@{HOST}:{}", self.port),
            database,
        )
    }

    /// The directory of the server's Unix socket (`-k`); the superuser may connect there
    /// without a password even when TCP requires TLS.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// Creates the login role `name` (no password, no superuser) with `createuser`, through the
    /// Unix socket.
    pub fn create_user(&self, name: &str) -> Result<(), HarnessError> {
        let mut cmd = Command::new(self.bins.program("createuser"));
        cmd.arg("-h")
            .arg(&self.root)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "--no-superuser",
                name,
            ])
            .stdin(Stdio::null());
        run_tool(&mut cmd)
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (fast shutdown) and starts it again on the same port
    /// and data directory, waiting until it accepts connections.
    ///
    /// On error the server is left stopped; dropping it still cleans up.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop(Shutdown::Fast);
        self.launch().map_err(|failure| failure.error)
    }

    /// Runs initdb (output captured, reported only on failure).
    fn initdb(&self) -> Result<(), HarnessError> {
        let mut cmd = command_as(self.as_postgres, &self.bins.program("initdb"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&self.root)
            .stdin(Stdio::null());
        run_tool(&mut cmd)
    }

    /// Launches the server on `self.port` through the watchdog and waits
    /// until it is ready. On failure everything launched is stopped again.
    fn launch(&mut self) -> Result<(), LaunchFailure> {
        let fatal = |error| LaunchFailure {
            error,
            retryable: false,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| {
                fatal(HarnessError::io(
                    format!("opening {}", self.log_path.display()),
                    e,
                ))
            })?;
        let log_err = log.try_clone().map_err(|e| {
            fatal(HarnessError::io(
                format!("duplicating handle of {}", self.log_path.display()),
                e,
            ))
        })?;

        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pg-harness-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .arg(&self.data_dir);
        if self.as_postgres {
            cmd.args(["runuser", "-u", process::POSTGRES_OS_USER, "--"]);
        }
        cmd.arg(self.bins.program("postgres"))
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.root)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
            ])
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // Own process group: terminal signals (Ctrl-C) go to the test process
        // only, and the whole server can be killed as a group if needed.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);

        let wrapper = cmd.spawn().map_err(|e| {
            fatal(HarnessError::io(
                "spawning the PostgreSQL watchdog (`sh`)".to_string(),
                e,
            ))
        })?;
        self.running = Some(Running {
            wrapper,
            wrapper_exited: false,
            postmaster_pid: None,
        });

        match self.wait_ready() {
            Ok(pid) => {
                if let Some(running) = self.running.as_mut() {
                    running.postmaster_pid = Some(pid);
                }
                Ok(())
            }
            Err(failure) => {
                self.stop(Shutdown::Immediate);
                let error = match failure.error {
                    HarnessError::StartFailed { message, .. } => HarnessError::start_failed(
                        crate::Server::Postgres,
                        message,
                        process::file_tail(&self.log_path, LOG_TAIL_LINES),
                    ),
                    other => other,
                };
                Err(LaunchFailure {
                    error,
                    retryable: failure.retryable,
                })
            }
        }
    }

    /// Polls until the server accepts connections; returns the postmaster
    /// pid. Fails when the server exits or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<u32, LaunchFailure> {
        let started = Instant::now();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(running) = self.running.as_mut() {
                match running.wrapper.try_wait() {
                    Ok(Some(status)) => {
                        running.wrapper_exited = true;
                        return Err(LaunchFailure {
                            error: HarnessError::start_failed(
                                crate::Server::Postgres,
                                format!(
                                    "the server exited during startup ({status}) on port {}",
                                    self.port
                                ),
                                String::new(),
                            ),
                            retryable: true,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(LaunchFailure {
                            error: HarnessError::io("waiting for the PostgreSQL watchdog", e),
                            retryable: false,
                        })
                    }
                }
            }

            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                && self.pg_isready()
            {
                if let Some(pid) = self.ready_postmaster_pid() {
                    return Ok(pid);
                }
            }

            if started.elapsed() > READY_TIMEOUT {
                return Err(LaunchFailure {
                    error: HarnessError::start_failed(
                        crate::Server::Postgres,
                        format!(
                            "the server did not accept connections on {HOST}:{} within {} s",
                            self.port,
                            READY_TIMEOUT.as_secs()
                        ),
                        String::new(),
                    ),
                    retryable: false,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `pg_isready` against the server. A missing `pg_isready` binary
    /// counts as success (the other readiness checks still apply).
    fn pg_isready(&self) -> bool {
        let status = Command::new(self.bins.program("pg_isready"))
            .args([
                "-q",
                "-h",
                HOST,
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-t",
                "3",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(status) => status.success(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// The postmaster pid if `postmaster.pid` describes a live postmaster on
    /// our port that reports `ready` (so a foreign server that grabbed the
    /// port is never mistaken for ours).
    fn ready_postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let pid: u32 = lines.first()?.trim().parse().ok()?;
        let port: u16 = lines.get(3)?.trim().parse().ok()?;
        let status = lines.get(7)?.trim();
        (port == self.port && status == "ready" && process::process_alive(pid)).then_some(pid)
    }

    /// The postmaster pid from `postmaster.pid`, if present.
    fn pid_file_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Stops the running server (if any): the `shutdown` signal to the
    /// postmaster, wait up to [`STOP_TIMEOUT`], then SIGKILL to its children,
    /// itself and the whole process group; finally reaps the watchdog. Never
    /// panics.
    fn stop(&mut self, shutdown: Shutdown) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        let postmaster = running
            .postmaster_pid
            .or_else(|| self.pid_file_pid())
            .filter(|pid| process::process_alive(*pid));

        let mut stopped = false;
        if let Some(pid) = postmaster {
            let signal = match shutdown {
                Shutdown::Fast => "INT",
                Shutdown::Immediate => "QUIT",
            };
            process::send_signal(signal, &pid.to_string());
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if !process::process_alive(pid) {
                    stopped = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !stopped {
                // Backends busy in a long statement can ignore a fast shutdown; kill them
                // too, so that none outlives the postmaster.
                for child in process::children_of(pid) {
                    process::send_signal("KILL", &child.to_string());
                }
                process::send_signal("KILL", &pid.to_string());
            }
        }

        // Kill whatever is left in the watchdog's process group (the `sh`
        // itself, its `sleep`, `runuser`, and after a SIGKILL any server
        // children). The group id stays reserved while the unreaped watchdog
        // exists, so this cannot hit an unrelated group.
        if !running.wrapper_exited {
            process::send_signal("KILL", &format!("-{}", running.wrapper.id()));
            let _ = running.wrapper.kill();
        }
        let _ = running.wrapper.wait();

        if !stopped {
            if let Some(pid) = postmaster {
                // Give the kernel a moment to tear the processes down so the
                // port and directory are free afterwards.
                let deadline = Instant::now() + Duration::from_secs(2);
                while process::process_alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// How [`PgServer::stop`] asks the server to stop.
#[derive(Clone, Copy)]
enum Shutdown {
    /// SIGINT: running transactions are rolled back, WAL is flushed (kept data survives).
    Fast,
    /// SIGQUIT: every backend exits at once, busy or not (the data is being deleted anyway).
    Immediate,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop(Shutdown::Immediate);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer")
            .field("url", &self.url("postgres"))
            .field("data_dir", &self.data_dir)
            .field("running", &self.running.is_some())
            .field("as_postgres_os_user", &self.as_postgres)
            .finish()
    }
}

/// Runs a PostgreSQL tool to completion; on failure the error carries its output's tail.
fn run_tool(cmd: &mut Command) -> Result<(), HarnessError> {
    let output = cmd
        .output()
        .map_err(|e| HarnessError::io(format!("running `{}`", process::describe(cmd)), e))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(HarnessError::start_failed(
        crate::Server::Postgres,
        format!("`{}` failed ({})", process::describe(cmd), output.status),
        process::text_tail(&text, LOG_TAIL_LINES),
    ))
}

/// Creates `temp_dir()/pg-harness-<pid>-<nanos>-<counter>`.
fn create_unique_dir() -> Result<PathBuf, HarnessError> {
    let base = std::env::temp_dir();
    let mut last_error = None;
    for _ in 0..16 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let counter = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "pg-harness-{}-{nanos}-{counter}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => {
                return Err(HarnessError::io(
                    format!("creating directory {}", dir.display()),
                    e,
                ))
            }
        }
    }
    Err(HarnessError::io(
        format!("creating a unique directory in {}", base.display()),
        last_error.unwrap_or_else(|| std::io::Error::other("no unique name found")),
    ))
}

/// Asks the OS for a free port on 127.0.0.1 (bind to port 0, then release).
fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("reading the address of a probe listener", e))?
        .port();
    drop(listener);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a query with psql over TCP and returns its trimmed output.
    fn psql(server: &PgServer, sql: &str) -> String {
        let system = Path::new("/usr/bin/psql");
        let program = if system.exists() {
            system.to_path_buf()
        } else {
            server.bins.program("psql")
        };
        let output = Command::new(program)
            .args(["-h", server.host(), "-p", &server.port().to_string()])
            .args([
                "-U",
                server.user(),
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-Atc", sql])
            .env_remove("PGPASSWORD")
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn accepts_connections(port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    }

    #[test]
    fn start_query_and_drop() {
        let started = Instant::now();
        let server = PgServer::start().expect("server starts");
        eprintln!("PgServer::start() took {:?}", started.elapsed());

        assert_eq!(server.host(), "127.0.0.1");
        assert_eq!(server.user(), "postgres");
        assert_eq!(
            server.url("db1"),
            format!("postgres://postgres@127.0.0.1:{}/db1", server.port())
        );
        assert!(server.data_dir().join("PG_VERSION").is_file());
        assert!(accepts_connections(server.port()));
        assert_eq!(psql(&server, "select 1"), "1");
        assert_eq!(psql(&server, "show max_connections"), "300");
        assert!(format!("{server:?}").contains(&server.port().to_string()));

        let port = server.port();
        let root = server.root.clone();
        let pid = server.running.as_ref().and_then(|r| r.postmaster_pid);
        let pid = pid.expect("postmaster pid known");
        assert!(process::process_alive(pid));

        let stopping = Instant::now();
        drop(server);
        eprintln!("drop took {:?}", stopping.elapsed());
        assert!(!process::process_alive(pid), "postmaster still running");
        assert!(!accepts_connections(port), "port {port} still accepts");
        assert!(!root.exists(), "{} still exists", root.display());
    }

    #[test]
    fn restart_keeps_port_and_data() {
        let mut server = PgServer::start().expect("server starts");
        let port = server.port();
        let old_pid = server.running.as_ref().and_then(|r| r.postmaster_pid);
        psql(
            &server,
            "create table survivor(v int); insert into survivor values (42)",
        );

        let started = Instant::now();
        server.restart().expect("restart works");
        eprintln!("restart took {:?}", started.elapsed());

        assert_eq!(server.port(), port);
        let new_pid = server.running.as_ref().and_then(|r| r.postmaster_pid);
        assert_ne!(old_pid, new_pid);
        assert!(!process::process_alive(old_pid.unwrap()));
        assert_eq!(psql(&server, "select v from survivor"), "42");

        server.restart().expect("second restart works");
        assert_eq!(psql(&server, "select 1"), "1");
    }

    #[test]
    fn servers_are_independent() {
        let a = PgServer::start().expect("first server");
        let b = PgServer::start().expect("second server");
        assert_ne!(a.port(), b.port());
        assert_ne!(a.data_dir(), b.data_dir());
        psql(&a, "create table only_in_a(x int)");
        assert_eq!(
            psql(
                &b,
                "select count(*) from pg_tables where tablename = 'only_in_a'"
            ),
            "0"
        );
    }

    /// Environment variable that turns [`watchdog_child`] into a real test
    /// body (it is only meant to run as a subprocess).
    const CHILD_ENV: &str = "PG_HARNESS_WATCHDOG_CHILD";

    /// Subprocess body for [`watchdog_stops_server_when_owner_exits`]:
    /// starts a server, reports it, and exits without dropping it.
    #[test]
    #[ignore = "helper run as a subprocess by watchdog_stops_server_when_owner_exits"]
    fn watchdog_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let server = PgServer::start().expect("server starts");
        let pid = server.running.as_ref().and_then(|r| r.postmaster_pid);
        println!(
            "WATCHDOG-CHILD {} {} {}",
            server.port(),
            pid.unwrap_or(0),
            server.root.display()
        );
        std::mem::forget(server);
        std::process::exit(0);
    }

    #[test]
    fn watchdog_stops_server_when_owner_exits() {
        let fields = crate::process::run_watchdog_child(
            "postgres::server::tests::watchdog_child",
            &[(CHILD_ENV, "1".as_ref())],
        );
        let port: u16 = fields[0].parse().unwrap();
        let pid: u32 = fields[1].parse().unwrap();
        let root = PathBuf::from(&fields[2]);
        assert!(pid > 0);

        let deadline = Instant::now() + Duration::from_secs(15);
        while (process::process_alive(pid) || root.exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!process::process_alive(pid), "orphaned postmaster {pid}");
        assert!(!root.exists(), "{} not removed", root.display());
        assert!(!accepts_connections(port));
    }

    #[test]
    fn early_exit_is_retried_and_reported_with_log_tail() {
        use std::os::unix::fs::PermissionsExt;

        let bin = create_unique_dir().unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let scripts = [
            ("initdb", "#!/bin/sh\nmkdir -p \"$2\"\n"),
            (
                "postgres",
                "#!/bin/sh\necho \"FATAL:  fake server refuses to start\" >&2\nexit 1\n",
            ),
        ];
        for (name, body) in scripts {
            let path = bin.join(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        let started = Instant::now();
        let err = PgServer::start_with(Binaries::from_dir(bin.clone()), |_| Ok(())).unwrap_err();
        eprintln!("failed start took {:?}", started.elapsed());
        match &err {
            HarnessError::StartFailed {
                message, log_tail, ..
            } => {
                assert!(message.contains("exited during startup"), "{message}");
                assert_eq!(
                    log_tail.matches("fake server refuses").count(),
                    LAUNCH_ATTEMPTS,
                    "{log_tail}"
                );
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("--- log tail ---"));
        std::fs::remove_dir_all(&bin).unwrap();
        // The failed server's directory is gone too.
        let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&format!("pg-harness-{}-", std::process::id()))
                    && e.path().join("server.log").exists()
                    && std::fs::read_to_string(e.path().join("server.log"))
                        .map(|log| log.contains("fake server refuses"))
                        .unwrap_or(false)
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn unique_dirs_and_free_ports() {
        let a = create_unique_dir().unwrap();
        let b = create_unique_dir().unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("pg-harness-{}-", std::process::id())),
            "{name}"
        );
        std::fs::remove_dir(&a).unwrap();
        std::fs::remove_dir(&b).unwrap();
        assert_ne!(free_port().unwrap(), 0);
    }
}
