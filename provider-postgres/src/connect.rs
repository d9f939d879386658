//! Opening a server connection as libpq does: TCP with a connect timeout, the `SSLRequest`
//! negotiation, the TLS handshake of [`crate::tls`], the startup message, and libpq's fallbacks
//! for `allow` and `prefer` when the server refuses the first attempt. Every failure says which
//! server, which step and which file.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use datastore_api::{ConnectionConfig, Error, Result};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::{explain, TlsSetup, Transport};

/// The `SSLRequest` message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// Longest first server message accepted (an error response or an authentication request).
const MAX_FIRST_MESSAGE: usize = 64 * 1024;

/// A byte stream to the server, plaintext or TLS.
pub(crate) trait ServerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ServerIo for T {}

/// Opens connections to one server.
pub(crate) struct Connector {
    host: String,
    port: u16,
    timeout: Duration,
    tls: TlsSetup,
}

/// An opened server connection and the server's first message.
struct Opened {
    io: Box<dyn ServerIo>,
    first: Vec<u8>,
    /// `prefer` met a server without TLS and went on in plaintext on the same connection.
    plain_after_refusal: bool,
}

/// An attempt's failure, and whether libpq would try the next transport after it.
struct Failed {
    error: Error,
    try_next: bool,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            try_next: false,
        }
    }
}

impl Connector {
    /// The connector for the configured server; checks the TLS files.
    pub(crate) fn new(c: &ConnectionConfig) -> Result<Arc<Self>> {
        Ok(Arc::new(Connector {
            host: c.host.clone(),
            port: c.port,
            timeout: c.connect_timeout,
            tls: TlsSetup::from_config(c)?,
        }))
    }

    /// `host:port`, for messages.
    pub(crate) fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The limit of one connection attempt.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Opens a connection, sends `startup` (the client's startup message) and returns the stream
    /// with the server's first message, which the caller passes on to the client.
    pub(crate) async fn open(&self, startup: &[u8]) -> Result<(Box<dyn ServerIo>, Vec<u8>)> {
        let transports = self.tls.transports();
        // A refusal that a later transport may overcome; reported if none does (libpq shows
        // the server's own error, not the fallback's).
        let mut refused: Option<(Box<dyn ServerIo>, Vec<u8>)> = None;
        for (i, transport) in transports.iter().enumerate() {
            let more = i + 1 < transports.len();
            let outcome =
                tokio::time::timeout(self.attempt_limit(), self.attempt(*transport, startup))
                    .await
                    .unwrap_or_else(|_| Err(self.timed_out().into()));
            match outcome {
                // libpq: a refusal of the first transport (an ErrorResponse, e.g. no pg_hba.conf
                // line for it) makes `allow` and `prefer` try the other one, unless the attempt
                // already ended up in plaintext (`prefer` against a server without TLS).
                Ok(opened)
                    if more
                        && !opened.plain_after_refusal
                        && opened.first.first() == Some(&b'E') =>
                {
                    refused = Some((opened.io, opened.first));
                }
                Ok(opened) => return Ok((opened.io, opened.first)),
                Err(failed) if more && failed.try_next => {
                    tracing::warn!(error = %failed.error, "trying the next transport (sslmode {})", self.tls.mode().as_str());
                }
                Err(failed) => return refused.ok_or(failed.error),
            }
        }
        refused.ok_or_else(|| {
            Error::transient(format!(
                "PostgreSQL at {}: no transport left to try",
                self.target()
            ))
        })
    }

    /// The limit of one attempt: one connect timeout for reaching an address of the host and
    /// one for the negotiation (a second dead address is cut short by it).
    fn attempt_limit(&self) -> Duration {
        self.timeout.saturating_mul(2)
    }

    /// The longest [`Connector::open`] can take: every transport's attempt.
    pub(crate) fn open_limit(&self) -> Duration {
        let attempts = self.tls.transports().len() as u32;
        self.attempt_limit().saturating_mul(attempts)
    }

    async fn attempt(&self, transport: Transport, startup: &[u8]) -> Result<Opened, Failed> {
        let mut tcp = self.tcp().await?;
        let mut plain_after_refusal = false;
        let negotiate = async {
            let mut io: Box<dyn ServerIo> = match transport {
                Transport::Plain => Box::new(tcp),
                Transport::Tls { fallback_plain } => {
                    tcp.write_all(&SSL_REQUEST)
                        .await
                        .map_err(|e| self.io_error("sending the TLS request", e))?;
                    match tcp
                        .read_u8()
                        .await
                        .map_err(|e| self.io_error("reading the TLS answer", e))?
                    {
                        b'S' => self.handshake(tcp).await?,
                        b'N' if fallback_plain => {
                            plain_after_refusal = true;
                            Box::new(tcp)
                        }
                        b'N' => return Err(self.no_tls().into()),
                        other => return Err(self.protocol_error(other).into()),
                    }
                }
            };
            io.write_all(startup)
                .await
                .map_err(|e| self.io_error("sending the startup message", e))?;
            io.flush()
                .await
                .map_err(|e| self.io_error("sending the startup message", e))?;
            let first = read_message(&mut io)
                .await
                .map_err(|e| self.io_error("reading the server's answer", e))?;
            Ok::<_, Failed>((io, first))
        };
        let (io, first) = tokio::time::timeout(self.timeout, negotiate)
            .await
            .unwrap_or_else(|_| Err(self.timed_out().into()))?;
        Ok(Opened {
            io,
            first,
            plain_after_refusal,
        })
    }

    /// TCP to the first address of the host that accepts.
    async fn tcp(&self) -> Result<TcpStream> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                Error::transient(format!(
                    "PostgreSQL at {}: cannot resolve host {:?} ({e})",
                    self.target(),
                    self.host
                ))
            })?;
        let mut last = None;
        for addr in addrs {
            // libpq's connect_timeout is per address: a dead first address (a broken IPv6
            // route) must not use up the time of the next one.
            let connect = tokio::time::timeout(self.timeout, TcpStream::connect(addr));
            match connect
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable));
        Err(self.io_error("connecting", e).error)
    }

    async fn handshake(&self, tcp: TcpStream) -> Result<Box<dyn ServerIo>, Failed> {
        let config = self.tls.client_config()?;
        let name = ServerName::try_from(self.host.clone()).map_err(|_| {
            Error::configuration(format!(
                "DATASTORE_HOST: {:?} is neither a host name nor an IP address",
                self.host
            ))
        })?;
        match TlsConnector::from(config).connect(name, tcp).await {
            Ok(tls) => Ok(Box::new(tls)),
            // libpq's `prefer` falls back to plaintext when the handshake fails.
            Err(e) => Err(Failed {
                error: self.io_error("in the TLS handshake", e).error,
                try_next: true,
            }),
        }
    }

    /// Classifies an I/O failure: TLS problems (certificates, keys, names) are configuration
    /// errors that retrying cannot fix; refused, reset and closed connections are transient.
    fn io_error(&self, step: &str, e: io::Error) -> Failed {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let error = match tls {
            Some(tls) => Error::configuration(format!(
                "PostgreSQL at {} (sslmode {}): {}",
                self.target(),
                self.tls.mode().as_str(),
                explain(
                    tls,
                    &self.host,
                    &self.tls.describe_root(),
                    &self.tls.describe_client()
                )
            ))
            .with_source(e),
            None => Error::transient(format!(
                "PostgreSQL at {}: {step}: {}",
                self.target(),
                io_cause(&e)
            )),
        };
        Failed {
            error,
            try_next: false,
        }
    }

    fn timed_out(&self) -> Error {
        no_answer(&self.target(), self.timeout)
    }

    fn no_tls(&self) -> Error {
        Error::configuration(format!(
            "PostgreSQL at {} does not accept TLS, and DATASTORE_SSLMODE={} requires it: enable ssl on the server (never use disable in production)",
            self.target(),
            self.tls.mode().as_str()
        ))
    }

    fn protocol_error(&self, byte: u8) -> Error {
        // An 'E' here is a server that could not start a backend yet (starting up, too many
        // connections): worth retrying.
        let error = Error::permanent(format!(
            "PostgreSQL at {}: unexpected answer {byte:#04x} to the TLS request (is this a PostgreSQL server?)",
            self.target()
        ));
        if byte == b'E' {
            error.temporary()
        } else {
            error
        }
    }
}

/// The server at `target` did not answer within the connect `timeout`.
pub(crate) fn no_answer(target: &str, timeout: Duration) -> Error {
    Error::transient(format!(
        "PostgreSQL at {target}: no answer within {timeout:?} (DATASTORE_CONNECT_TIMEOUT)"
    ))
}

/// A connection-level I/O failure in words a user can act on.
pub(crate) fn io_cause(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused (is the server running and listening on that port?)".to_owned()
        }
        io::ErrorKind::UnexpectedEof => "the server closed the connection".to_owned(),
        io::ErrorKind::ConnectionReset => "the server reset the connection".to_owned(),
        _ => e.to_string(),
    }
}

/// Reads one backend message (type byte, length, body) as raw bytes.
async fn read_message(io: &mut Box<dyn ServerIo>) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 5];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_FIRST_MESSAGE).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a first message of {len} bytes"),
        ));
    }
    let mut message = header.to_vec();
    message.resize(1 + len, 0);
    io.read_exact(&mut message[5..]).await?;
    Ok(message)
}
