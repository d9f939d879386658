//! Mapping of sqlx errors onto the API's error kinds.

use datastore_api::{Error, ErrorKind, ErrorStatus};

/// A backend failure that a retry may cure, and one it will not.
const TRANSIENT: (ErrorKind, ErrorStatus) = (ErrorKind::Backend, ErrorStatus::Temporary);
const PERMANENT: (ErrorKind, ErrorStatus) = (ErrorKind::Backend, ErrorStatus::Permanent);

/// A kind that retrying never changes.
const fn of(kind: ErrorKind) -> (ErrorKind, ErrorStatus) {
    (kind, ErrorStatus::Permanent)
}

/// Classifies a sqlx error. Messages come from the server or driver and never include the
/// connection password.
pub(crate) fn map_err(e: sqlx::Error) -> Error {
    use sqlx::Error as E;
    let ((kind, status), message) = match &e {
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let class = match code.as_str() {
                "23505" => of(ErrorKind::Duplicate),
                "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "53300"
                | "53400" => TRANSIENT,
                c if c.starts_with("08") => TRANSIENT,
                c if c.starts_with("22") || c.starts_with("23") => of(ErrorKind::InvalidInput),
                c if c.starts_with("28") || c == "3D000" => of(ErrorKind::Configuration),
                _ => PERMANENT,
            };
            (class, format!("PostgreSQL error {code}: {}", db.message()))
        }
        E::Io(_) | E::PoolTimedOut | E::WorkerCrashed | E::Protocol(_) => {
            (TRANSIENT, "connection to PostgreSQL failed".to_owned())
        }
        E::PoolClosed => (PERMANENT, "the datastore was closed".to_owned()),
        E::Tls(_) => (
            of(ErrorKind::Configuration),
            "TLS setup with PostgreSQL failed".to_owned(),
        ),
        E::Configuration(_) => (
            of(ErrorKind::Configuration),
            "invalid PostgreSQL connection settings".to_owned(),
        ),
        E::RowNotFound => (of(ErrorKind::NotFound), "no row found".to_owned()),
        _ => (PERMANENT, "PostgreSQL request failed".to_owned()),
    };
    Error::new(kind, message).with_status(status).with_source(e)
}

/// Classifies a failed connect to `target` (`host:port`): like [`map_err`], with the server and
/// the operating system's cause in the message.
pub(crate) fn map_connect_err(target: &str, e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Io(io) => {
            let cause = crate::connect::io_cause(io);
            Error::transient(format!("PostgreSQL at {target}: connecting: {cause}"))
        }
        _ => {
            let mapped = map_err(e);
            let message = format!("PostgreSQL at {target}: {}", mapped.message());
            Error::new(mapped.kind(), message).with_status(mapped.status())
        }
    }
}
