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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use datastore_api::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::connect::Connector;

/// Longest startup message accepted from sqlx.
const MAX_STARTUP: usize = 16 * 1024;

/// A running bridge; it stops, and removes its socket, when the pool it serves closes.
pub(crate) struct Bridge {
    dir: PathBuf,
    /// The number in the socket's name (sqlx names it `.s.PGSQL.<port>`), unique in the process.
    port: u16,
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
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed).max(1);
        let path = dir.join(format!(".s.PGSQL.{port}"));
        // A socket of a store of this process long gone (the counter wrapped).
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| {
            Error::configuration(format!(
                "cannot create the connection socket {}: {e}",
                path.display()
            ))
        })?;
        Ok(Bridge {
            dir,
            port,
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
            self.dir.join(format!(".s.PGSQL.{}", self.port)),
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
            if let Err(e) = relay(client, &connector).await {
                tracing::warn!(error = %e, "cannot open a PostgreSQL connection");
                *failures.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        });
    }
}

/// Reads sqlx's startup message, opens the server connection with it, passes the server's first
/// message back and then copies bytes both ways until either side closes.
async fn relay(mut client: UnixStream, connector: &Connector) -> Result<()> {
    let startup = tokio::time::timeout(connector.timeout(), read_startup(&mut client))
        .await
        .ok()
        .and_then(std::io::Result::ok)
        .ok_or_else(|| Error::permanent("the driver sent no valid startup message"))?;
    let (mut server, first) = connector.open(&startup).await?;
    if client.write_all(&first).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
    let _ = server.shutdown().await;
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
/// the directories of processes that are gone are removed too.
fn process_dir() -> Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    remove_dead_processes_dirs();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{nanos}", std::process::id()));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        // Another store of this process won the race.
        Err(_) if DIR.get().is_some() => {}
        Err(e) => {
            return Err(Error::configuration(format!(
                "cannot create a private directory in {} (TMPDIR): {e}",
                Path::new(&std::env::temp_dir()).display()
            )))
        }
    }
    Ok(DIR.get_or_init(|| dir).clone())
}

/// Names of the socket directories: `datastore-pg-<pid>-<nanos>`.
const DIR_PREFIX: &str = "datastore-pg-";

/// Removes socket directories whose process no longer runs.
fn remove_dead_processes_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
