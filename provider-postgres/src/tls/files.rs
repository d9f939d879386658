//! The TLS files of a connection: read afresh for every new connection (so rotated files are
//! used without a restart), checked for what they must hold, with errors that name the variable
//! and the path and say how to fix the file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use datastore_api::{Error, Result};
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// One configured file and the variable that named it (for messages).
#[derive(Debug, Clone)]
pub(crate) struct TlsFile {
    pub(crate) var: &'static str,
    pub(crate) path: PathBuf,
}

impl TlsFile {
    pub(crate) fn new(var: &'static str, path: impl Into<PathBuf>) -> Self {
        TlsFile {
            var,
            path: path.into(),
        }
    }

    /// `DATASTORE_SSLKEY (/etc/ssl/tls.key)`: how messages name the file.
    pub(crate) fn describe(&self) -> String {
        format!("{} ({})", self.var, self.path.display())
    }

    fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::configuration(format!("{}: {what}", self.describe()))
    }

    fn read(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_owned(),
                std::io::ErrorKind::PermissionDenied => "cannot be read: permission denied on the file or one of its directories (this process needs search permission on every directory and read permission on the file)".to_owned(),
                _ => format!("cannot be read: {e}"),
            };
            self.error(why).with_source(e)
        })
    }

    /// The certificates in the file (PEM, one or more; or a single DER certificate).
    pub(crate) fn certificates(&self) -> Result<Vec<CertificateDer<'static>>> {
        let bytes = self.read()?;
        // DER starts with a SEQUENCE tag; anything else that is not PEM holds nothing usable.
        if !is_pem(&bytes) && bytes.first() == Some(&0x30) {
            return match PrivateKeyDer::try_from(bytes.as_slice()) {
                Ok(_) => Err(self.error("holds a private key, not a certificate")),
                Err(_) => Ok(vec![CertificateDer::from(bytes)]),
            };
        }
        let mut certs = Vec::new();
        let mut keys = 0;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
            match section {
                Ok((SectionKind::Certificate, der)) => certs.push(CertificateDer::from(der)),
                Ok((
                    SectionKind::PrivateKey
                    | SectionKind::RsaPrivateKey
                    | SectionKind::EcPrivateKey,
                    _,
                )) => keys += 1,
                Ok(_) => {}
                Err(e) => return Err(self.error(format!("is not valid PEM: {}", pem_error(&e)))),
            }
        }
        match (certs.is_empty(), keys) {
            (false, _) => Ok(certs),
            (true, 0) => Err(self.error(
                "holds no certificate (expected a PEM block \"-----BEGIN CERTIFICATE-----\")",
            )),
            (true, _) => Err(self.error("holds a private key, not a certificate")),
        }
    }

    /// The trust anchors in the file: the only ones used, as libpq does with `sslrootcert`.
    pub(crate) fn root_store(&self) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        for cert in self.certificates()? {
            store.add(cert).map_err(|e| {
                self.error(format!("holds a certificate that cannot be parsed ({e})"))
            })?;
        }
        Ok(store)
    }

    /// The private key in the file (PKCS#8, PKCS#1 or SEC1; PEM or DER). An encrypted key is
    /// refused with a message that says how to decrypt it; a group- or world-readable key is
    /// accepted (Kubernetes secret volumes are often 0644) with a warning.
    pub(crate) fn private_key(&self) -> Result<PrivateKeyDer<'static>> {
        let bytes = self.read()?;
        self.warn_if_readable_by_others();
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(self.error(format!(
                "is encrypted with a passphrase, which this library cannot use (libpq would ask for sslpassword); decrypt it once with `openssl pkey -in {0} -out {0}.plain` and point {1} at the result (mode 0600)",
                self.path.display(),
                self.var
            )));
        }
        if !is_pem(&bytes) {
            return PrivateKeyDer::try_from(bytes)
                .map_err(|_| self.error("is neither a PEM file nor a DER private key"));
        }
        match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(key) => Ok(key),
            Err(pem::Error::NoItemsFound) if text.contains("-----BEGIN CERTIFICATE-----") => {
                Err(self.error("holds a certificate, not a private key"))
            }
            Err(pem::Error::NoItemsFound) => Err(self.error(
                "holds no private key (expected a PEM block such as \"-----BEGIN PRIVATE KEY-----\")",
            )),
            Err(e) => Err(self.error(format!("is not valid PEM: {}", pem_error(&e)))),
        }
    }

    fn warn_if_readable_by_others(&self) {
        if let Ok(meta) = std::fs::metadata(&self.path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    variable = self.var,
                    path = %self.path.display(),
                    mode = format!("{mode:04o}"),
                    "the client key is readable by other users; libpq would refuse it (chmod 0600)"
                );
            }
        }
    }
}

/// libpq's default locations (`~/.postgresql/root.crt`, `postgresql.crt`, `postgresql.key`),
/// used when the variable is not set and the file exists.
pub(crate) fn default_file(var: &'static str, name: &str) -> Option<TlsFile> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql").join(name);
    path.is_file().then(|| TlsFile::new(var, path))
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .is_some_and(|start| bytes[start..].starts_with(b"-----BEGIN"))
}

/// The PEM error without any bytes of the file (which could be key material).
fn pem_error(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        _ => "it cannot be decoded",
    }
}
