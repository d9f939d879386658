//! The certificate files the configuration names: readable, the client certificate's CN is
//! the configured user (PostgreSQL maps the certificate to the user by CN), and days until
//! each expires (a warning under [`EXPIRY_WARNING_DAYS`]).

use std::path::Path;

use chrono::{DateTime, Utc};
use datastore::{DatastoreConfig, ProviderKind};
use x509_parser::pem::parse_x509_pem;

use super::Check;

/// Fewer days than this before a certificate expires is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// One check per configured certificate file (none when TLS uses no files).
pub fn check(config: &DatastoreConfig, now: DateTime<Utc>) -> Vec<Check> {
    let mongodb = config.provider == ProviderKind::Mongodb;
    // MongoDB reads NVSentinel's own variables first, as the provider does.
    let env_path = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(Into::into)
    };
    let client = mongodb
        .then(|| env_path("MONGODB_CLIENT_CERT_PATH"))
        .flatten()
        .or_else(|| config.connection.ssl_cert.clone());
    let ca = mongodb
        .then(|| env_path("MONGODB_CA_CERT_PATH"))
        .flatten()
        .or_else(|| config.connection.ssl_root_cert.clone());
    let mut checks = Vec::new();
    if let Some(path) = client {
        // MongoDB's X.509 authentication takes the whole subject as the user, not the CN.
        let user = (!mongodb).then_some(config.connection.username.as_str());
        let mut check = certificate("client certificate", &path, user, now);
        // Only certificate authentication maps the CN to the user; with a password (or a
        // pg_ident map) a CN that differs is worth a look, not a failure.
        if check.detail.contains("DATASTORE_USERNAME") && config.connection.password.is_some() {
            check.status = super::Status::Warn;
        }
        checks.push(check);
    }
    if let Some(path) = ca {
        checks.push(certificate("CA certificate", &path, None, now));
    }
    checks
}

/// The first certificate in the PEM file at `path`: its CN against `user` (when given) and its
/// expiry.
pub fn certificate(name: &str, path: &Path, user: Option<&str>, now: DateTime<Utc>) -> Check {
    let shown = path.display();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return Check::fail(name, format!("cannot read {shown}: {e}")),
    };
    let pem = match parse_x509_pem(&bytes) {
        Ok((_, pem)) => pem,
        Err(e) => return Check::fail(name, format!("{shown} is not a PEM certificate ({e})")),
    };
    let cert = match pem.parse_x509() {
        Ok(cert) => cert,
        Err(e) => return Check::fail(name, format!("{shown} is not an X.509 certificate ({e})")),
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned();
    let until = DateTime::<Utc>::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let days = (until - now).num_days();
    let when = until.format("%Y-%m-%d");
    if let Some(user) = user.filter(|u| *u != cn) {
        return Check::fail(
            name,
            format!(
                "{shown}: CN {cn:?} is not DATASTORE_USERNAME {user:?}; the server takes the \
                 user from the CN: issue the certificate for {user:?} or set the username to {cn:?}"
            ),
        );
    }
    if until <= now {
        Check::fail(
            name,
            format!("{shown} (CN {cn:?}) expired on {when}: renew it"),
        )
    } else if days < EXPIRY_WARNING_DAYS {
        Check::warn(
            name,
            format!("{shown} (CN {cn:?}) expires in {days} days ({when}): renew it soon"),
        )
    } else {
        Check::ok(
            name,
            format!("{shown}: CN {cn:?}, expires in {days} days ({when})"),
        )
    }
}
