//! TLS test servers (feature `tls`): a CA and certificates made with `rcgen`, and a PostgreSQL
//! set up exactly as the provider's spec says: `ssl = on`, only `hostssl … cert
//! clientcert=verify-full` lines for TCP, and the non-superuser role [`CERT_USER`] with the
//! spec's grants. The superuser connects only through the Unix socket.
//!
//! ```no_run
//! # fn main() -> Result<(), datastore_testkit::HarnessError> {
//! let server = datastore_testkit::postgres::tls::TlsServer::start(datastore_testkit::postgres::tls::ServerCert::Valid)?;
//! let files = server.files();
//! assert!(files.ca.exists() && files.client_key.exists());
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use test_certs::{Authority, Validity};

use crate::postgres::PgServer;
use crate::HarnessError;

/// The role that authenticates with its certificate (the certificate's CN), as in the spec.
pub const CERT_USER: &str = "postgresql";
/// The only name in the server certificate: connecting to `127.0.0.1` is a name mismatch.
pub const SERVER_NAME: &str = "localhost";

/// Which certificate the server presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCert {
    /// Signed by [`CertFiles::ca`], valid now, naming [`SERVER_NAME`].
    Valid,
    /// Signed by the CA, naming [`SERVER_NAME`], expired in 2021.
    Expired,
}

/// The certificate files of a [`TlsServer`], all PEM.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing the server uses.
    pub other_ca: PathBuf,
    /// Client certificate with CN [`CERT_USER`], signed by the CA.
    pub client_cert: PathBuf,
    /// Its key (mode 0600).
    pub client_key: PathBuf,
    /// Client certificate with CN `intruder`, signed by the CA (its key is [`CertFiles::intruder_key`]).
    pub intruder_cert: PathBuf,
    /// The intruder's key.
    pub intruder_key: PathBuf,
    /// Client certificate with CN [`CERT_USER`] signed by the other CA.
    pub foreign_cert: PathBuf,
    /// Its key.
    pub foreign_key: PathBuf,
}

/// A PostgreSQL server that speaks TLS only (over TCP) and authenticates by certificate.
pub struct TlsServer {
    server: PgServer,
    files: CertFiles,
}

impl TlsServer {
    /// Generates the certificates and starts the server with `cert`.
    pub fn start(cert: ServerCert) -> Result<TlsServer, HarnessError> {
        let mut files = None;
        let server = PgServer::start_configured(|data| {
            files = Some(configure(data, cert)?);
            Ok(())
        })?;
        let files = files.ok_or_else(|| {
            HarnessError::start_failed(crate::Server::Postgres, "no TLS files", "")
        })?;
        server.create_user(CERT_USER)?;
        Ok(TlsServer { server, files })
    }

    /// The certificates and keys.
    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// The TCP port (TLS only).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The superuser's URL for `database`, through the Unix socket (trust authentication).
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}&port={}&sslmode=disable",
            self.server.socket_dir().display(),
            self.server.port()
        )
    }

    /// The spec's grants for [`CERT_USER`] on `database` (run them connected to it).
    pub fn spec_grants(database: &str) -> Vec<String> {
        vec![
            format!("GRANT ALL PRIVILEGES ON DATABASE {database} TO {CERT_USER}"),
            format!("GRANT ALL ON SCHEMA public TO {CERT_USER}"),
            format!("GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO {CERT_USER}"),
            format!("GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO {CERT_USER}"),
            format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {CERT_USER}"),
            format!(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {CERT_USER}"
            ),
        ]
    }
}

/// Writes the certificates into `data/tls`, the server's own files into `data`, and the TLS
/// settings and `pg_hba.conf`.
fn configure(data: &Path, cert: ServerCert) -> Result<CertFiles, HarnessError> {
    let dir = data.join("tls");
    std::fs::create_dir_all(&dir).map_err(|e| HarnessError::io("creating the TLS dir", e))?;
    let ca = Authority::new("datastore test CA").map_err(cert_error)?;
    let other = Authority::new("some other CA").map_err(cert_error)?;
    let validity = match cert {
        ServerCert::Valid => Validity::Now,
        ServerCert::Expired => Validity::Expired,
    };
    let (server_pem, server_key) = ca.sign(SERVER_NAME, validity).map_err(cert_error)?;
    write(&data.join("server.crt"), &server_pem, 0o644)?;
    write(&data.join("server.key"), &server_key, 0o600)?;
    write(&data.join("root.crt"), ca.pem(), 0o644)?;
    let issue = |authority: &Authority, cn: &str, name: &str| -> Result<_, HarnessError> {
        let (pem, key) = authority.sign(cn, Validity::Now).map_err(cert_error)?;
        let (cert, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        write(&cert, &pem, 0o644)?;
        write(&key_path, &key, 0o600)?;
        Ok((cert, key_path))
    };
    let (client_cert, client_key) = issue(&ca, CERT_USER, "client")?;
    let (intruder_cert, intruder_key) = issue(&ca, "intruder", "intruder")?;
    let (foreign_cert, foreign_key) = issue(&other, CERT_USER, "foreign")?;
    let files = CertFiles {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
        client_cert,
        client_key,
        intruder_cert,
        intruder_key,
        foreign_cert,
        foreign_key,
    };
    write(&files.ca, ca.pem(), 0o644)?;
    write(&files.other_ca, other.pem(), 0o644)?;
    append(
        &data.join("postgresql.conf"),
        "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n",
    )?;
    write(
        &data.join("pg_hba.conf"),
        &format!(
            "local all all trust\nhostssl all {CERT_USER} 127.0.0.1/32 cert clientcert=verify-full\nhostssl all {CERT_USER} ::1/128 cert clientcert=verify-full\n"
        ),
        0o600,
    )?;
    Ok(files)
}

fn cert_error(e: test_certs::Error) -> HarnessError {
    HarnessError::start_failed(
        crate::Server::Postgres,
        format!("generating test certificates: {e}"),
        "",
    )
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

fn append(path: &Path, text: &str) -> Result<(), HarnessError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| HarnessError::io(format!("appending to {}", path.display()), e))
}
