//! The pool's way to the server when TLS may be involved. sqlx 0.8 (and 0.9) cannot take a
//! rustls configuration of ours: it always adds the public web roots to a given root
//! certificate, never retries `allow`, and reports handshake failures without their cause. So
//! sqlx connects, in plaintext, to a private Unix socket of this process, and for each such
//! connection [`Connector`] opens the real one (libpq's sslmodes, connect timeout, typed errors)
//! and the bytes are copied both ways.
//!
//! The sockets live in one directory per process, of mode 0700 (`$TMPDIR/datastore-pg-<pid>-…`;
//! directories left by processes that are gone are removed when the next one starts), and only
//! this process may use them (the peer's pid is checked), so no other process can borrow the
//! client certificate.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use datastore_api::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::connect::Connector;

/// How long the server may take to finish after the driver closed its side.
const DRAIN: Duration = Duration::from_secs(5);
/// Longest startup message accepted from sqlx.
const MAX_STARTUP: usize = 16 * 1024;

/// A running bridge; it stops, and removes its socket, when the pool it serves closes.
pub(crate) struct Bridge {
    dir: PathBuf,
    /// The number in the socket's name (sqlx names it `.s.PGSQL.<port>`), unique in the process.
    port: u16,
    /// The socket: `dir/.s.PGSQL.<port>`.
    socket: PathBuf,
    connector: Arc<Connector>,
    /// The latest failure to open a server connection, for the caller whose connect it broke.
    last_failure: Arc<Mutex<Option<Error>>>,
    listener: Option<UnixListener>,
}

impl Bridge {
    /// Binds the socket (not serving yet: see [`Bridge::serve_until_closed`]).
    pub(crate) fn bind(connector: Arc<Connector>) -> Result<Bridge> {
        use std::sync::atomic::{AtomicU16, Ordering};
        static NEXT_PORT: AtomicU16 = AtomicU16::new(1);
        let dir = process_dir()?;
        // Numbers are reused only after 65,535 stores; one whose socket still exists is skipped,
        // never unlinked (it may belong to a live store).
        let mut tries = 0u32;
        let (port, socket, listener) = loop {
            let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed).max(1);
            let path = dir.join(format!(".s.PGSQL.{port}"));
            match UnixListener::bind(&path) {
                Ok(listener) => break (port, path, listener),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && tries < u32::from(u16::MAX) =>
                {
                    tries += 1;
                }
                Err(e) => {
                    return Err(Error::configuration(format!(
                        "cannot create the connection socket {}: {e}",
                        path.display()
                    )))
                }
            }
        };
        Ok(Bridge {
            dir,
            port,
            socket,
            connector,
            last_failure: Arc::new(Mutex::new(None)),
            listener: Some(listener),
        })
    }

    /// `options` redirected through the bridge.
    pub(crate) fn apply(&self, options: PgConnectOptions) -> PgConnectOptions {
        options
            .socket(&self.dir)
            .port(self.port)
            .ssl_mode(PgSslMode::Disable)
    }

    /// The failure behind the latest connection the bridge could not open, if any.
    pub(crate) fn take_failure(&self) -> Option<Error> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Serves connections until `closed` completes (the pool's close event), then removes the
    /// socket.
    pub(crate) fn serve_until_closed(
        &mut self,
        closed: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let (socket, connector, failures) = (
            self.socket.clone(),
            Arc::clone(&self.connector),
            Arc::clone(&self.last_failure),
        );
        tokio::spawn(async move {
            tokio::select! {
                () = accept_loop(listener, connector, failures) => {}
                () = closed => {}
            }
            let _ = std::fs::remove_file(&socket);
        });
    }
}

async fn accept_loop(
    listener: UnixListener,
    connector: Arc<Connector>,
    failures: Arc<Mutex<Option<Error>>>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(error = %e, "the connection socket failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let own = client
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .is_some_and(|pid| pid == std::process::id() as i32);
        if !own {
            tracing::warn!("refused a connection to the datastore socket from another process");
            continue;
        }
        let (connector, failures) = (Arc::clone(&connector), Arc::clone(&failures));
        tokio::spawn(async move {
            let mut client = client;
            if let Err(e) = relay(&mut client, &connector).await {
                tracing::warn!(error = %e, "cannot open a PostgreSQL connection");
                // Stored before the driver sees its socket close, so that the caller whose
                // connect this broke finds the cause.
                *failures.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
            drop(client);
        });
    }
}

/// Reads sqlx's startup message, opens the server connection with it, passes the server's first
/// message back and then copies bytes both ways until either side closes. Once the driver has
/// closed its side, the server gets [`DRAIN`] to finish before the relay ends, so an unreachable
/// server cannot keep the task alive.
async fn relay(client: &mut UnixStream, connector: &Connector) -> Result<()> {
    let startup = tokio::time::timeout(connector.timeout(), read_startup(client))
        .await
        .ok()
        .and_then(std::io::Result::ok)
        .ok_or_else(|| Error::permanent("the driver sent no valid startup message"))?;
    let (server, first) = connector.open(&startup).await?;
    if client.write_all(&first).await.is_err() {
        return Ok(());
    }
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = tokio::io::split(server);
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    };
    let down = tokio::io::copy(&mut from_server, &mut to_client);
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut down => {}
        () = &mut up => {
            let _ = tokio::time::timeout(DRAIN, down).await;
        }
    }
    Ok(())
}

async fn read_startup(client: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let len = client.read_u32().await? as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let mut message = vec![0u8; len];
    message[..4].copy_from_slice(&(len as u32).to_be_bytes());
    client.read_exact(&mut message[4..]).await?;
    Ok(message)
}

/// This process's socket directory, which only this user may enter; made on first use, when
/// the directories of processes that are gone are removed too. The process holds a lock on the
/// directory's `lock` file for as long as it runs; a directory whose lock can be taken belongs
/// to no running process (whatever its pid namespace) and is removed.
fn process_dir() -> Result<PathBuf> {
    static DIR: OnceLock<(PathBuf, std::fs::File)> = OnceLock::new();
    static CREATING: Mutex<()> = Mutex::new(());
    let _creating = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((dir, _)) = DIR.get() {
        return Ok(dir.clone());
    }
    remove_abandoned_dirs();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{nanos}", std::process::id()));
    let failed = |e: std::io::Error| {
        Error::configuration(format!(
            "cannot create a private directory {} (TMPDIR): {e}",
            dir.display()
        ))
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(failed)?;
    let lock = std::fs::File::create(dir.join("lock")).map_err(failed)?;
    lock.try_lock()
        .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
    let (dir, _) = DIR.get_or_init(|| (dir, lock));
    Ok(dir.clone())
}

/// Names of the socket directories: `datastore-pg-<pid>-<nanos>`.
const DIR_PREFIX: &str = "datastore-pg-";

/// Removes the socket directories whose `lock` no process holds.
fn remove_abandoned_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !named {
            continue;
        }
        let Ok(lock) = std::fs::File::open(entry.path().join("lock")) else {
            // Not ours to judge (no lock file, or another user's).
            continue;
        };
        if lock.try_lock().is_ok() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
