//! Certificates for TLS tests: a CA made on the spot and leaf certificates it signs (for a
//! server name or a client user), valid now or expired, as PEM text.
//!
//! ```
//! let ca = test_certs::Authority::new("test CA").unwrap();
//! let (cert, key) = ca.sign("localhost", test_certs::Validity::Now).unwrap();
//! assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
//! assert!(ca.pem().contains("BEGIN CERTIFICATE"));
//! ```

#![warn(missing_docs)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

pub use rcgen::Error;

/// When a signed certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From now on (rcgen's default span).
    Now,
    /// Only during 2020: expired.
    Expired,
}

/// A certificate authority: its own certificate and the key it signs with.
pub struct Authority {
    pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    /// A new self-signed CA with common name `name`.
    pub fn new(name: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Authority {
            pem: issuer.pem(),
            issuer,
        })
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for `cn` (its common name and only DNS name: a server's host name or a
    /// client's user name) and its private key, both PEM.
    pub fn sign(&self, cn: &str, validity: Validity) -> Result<(String, String), Error> {
        let mut params = CertificateParams::new(vec![cn.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, cn);
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
