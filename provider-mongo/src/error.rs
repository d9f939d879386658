//! Mapping of MongoDB driver errors onto the API's error kinds.
//!
//! Messages come from the server or the driver; the driver never echoes the connection
//! string, so credentials from `MONGODB_URI` do not reach them.

use datastore_api::{Error, ErrorKind, ErrorStatus};
use mongodb::error::{Error as MongoError, ErrorKind as Mk, WriteFailure};

/// Server error codes that mean "this input is wrong" (BadValue, FailedToParse, TypeMismatch,
/// PathNotViable, ConflictingUpdateOperators, DollarPrefixedFieldName, EmptyFieldName,
/// DottedFieldName, ImmutableField, Location errors of update operators).
const INVALID_INPUT_CODES: &[i32] = &[2, 9, 14, 28, 40, 52, 56, 57, 66, 4_770_000];

/// Codes that a retry can fix: host unreachable/not found, network timeout, interrupted,
/// write conflict, primary stepped down, shutdown, not writable primary, node is recovering,
/// interrupted at shutdown, exceeded time limit, lock timeout, too many connections.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 89, 11_601, 112, 189, 91, 10_107, 13_435, 13_436, 11_600, 11_602, 262, 50, 24, 9_001,
];

/// History errors: ChangeStreamHistoryLost, InvalidResumeToken, ChangeStreamFatalError, and the
/// codes older servers (3.6–4.2) used for a resume point that fell off the oplog. The one list,
/// for general errors and change-stream errors alike.
pub(crate) const HISTORY_LOST_CODES: &[i32] = &[286, 260, 280, 40_576, 40_585];

/// Classifies a driver error.
pub(crate) fn map_err(e: MongoError) -> Error {
    let transient_label = e.contains_label("TransientTransactionError")
        || e.contains_label("RetryableWriteError")
        || e.contains_label("UnknownTransactionCommitResult");
    let (class, message) = match e.kind.as_ref() {
        // ChangeStreamFatalError also covers pipeline mistakes; only a lost position is HistoryLost.
        Mk::Command(c) if c.code == 280 && !c.message.contains("resume") => (
            PERMANENT,
            format!("MongoDB error {} ({}): {}", c.code, c.code_name, c.message),
        ),
        Mk::Command(c) => (
            code_kind(c.code),
            format!("MongoDB error {} ({}): {}", c.code, c.code_name, c.message),
        ),
        Mk::Write(WriteFailure::WriteError(w)) => (
            code_kind(w.code),
            format!("MongoDB write error {}: {}", w.code, w.message),
        ),
        Mk::Write(WriteFailure::WriteConcernError(w)) => (
            // A write concern failure is worth retrying unless the code says otherwise.
            match code_kind(w.code) {
                PERMANENT => TRANSIENT,
                k => k,
            },
            format!("MongoDB write concern error {}: {}", w.code, w.message),
        ),
        Mk::InsertMany(im) => match im.write_errors.as_deref().and_then(<[_]>::first) {
            Some(w) => (
                code_kind(w.code),
                format!(
                    "MongoDB write error {} (document {}): {}",
                    w.code, w.index, w.message
                ),
            ),
            None => (TRANSIENT, "MongoDB write concern failed".to_owned()),
        },
        Mk::Io(_) | Mk::ConnectionPoolCleared { .. } | Mk::ServerSelection { .. } => {
            match tls_failure(&e.kind.to_string()) {
                Some(why) => (
                    of(ErrorKind::Configuration),
                    format!("the TLS handshake with MongoDB failed: {why}"),
                ),
                None => (
                    TRANSIENT,
                    format!("connection to MongoDB failed: {}", e.kind),
                ),
            }
        }
        Mk::Authentication { .. } => (
            of(ErrorKind::Configuration),
            "MongoDB authentication failed (check the client certificate or credentials)"
                .to_owned(),
        ),
        Mk::InvalidTlsConfig { message, .. } => (
            of(ErrorKind::Configuration),
            format!("MongoDB TLS settings are invalid: {message}"),
        ),
        Mk::InvalidArgument { message, .. } => (
            of(ErrorKind::InvalidInput),
            format!("invalid argument to MongoDB: {message}"),
        ),
        Mk::SessionsNotSupported | Mk::IncompatibleServer { .. } => (
            of(ErrorKind::Configuration),
            format!("the MongoDB server cannot serve this provider: {}", e.kind),
        ),
        Mk::Shutdown => (PERMANENT, "the datastore was closed".to_owned()),
        other => (PERMANENT, format!("MongoDB request failed: {other}")),
    };
    let (kind, status) = if transient_label && class == PERMANENT {
        TRANSIENT
    } else {
        class
    };
    Error::new(kind, message).with_status(status).with_source(e)
}

/// [`map_err`] for running an aggregation: a server command error that is no other kind (a
/// type error met in the data, an operator refused) is the pipeline's fault, `InvalidInput`,
/// as the evaluator reports the same failures.
pub(crate) fn map_aggregate_err(e: MongoError) -> Error {
    let command = matches!(e.kind.as_ref(), Mk::Command(_));
    let code = code_of(&e);
    let mapped = map_err(e.clone());
    let server_side = code.is_some_and(|c| NOT_THE_PIPELINE_CODES.contains(&c));
    if command && !server_side && mapped.is_permanent_backend() {
        Error::new(
            ErrorKind::InvalidInput,
            format!("aggregate: {}", mapped.message()),
        )
        .with_source(e)
    } else {
        mapped
    }
}

/// Command errors of an aggregation that are the server's, not the pipeline's: CursorNotFound,
/// QueryPlanKilled, CursorKilled, StaleConfig.
const NOT_THE_PIPELINE_CODES: &[i32] = &[43, 175, 237, 13_388];

/// Certificate problems seen in a connection failure, which retrying cannot fix. The driver
/// reports them only as text (a server selection error quotes each server's I/O error), so the
/// rustls messages are recognised by their wording.
fn tls_failure(text: &str) -> Option<&'static str> {
    const CASES: &[(&str, &str)] = &[
        ("invalid peer certificate: UnknownIssuer", "the server certificate is not signed by the CA in MONGODB_CA_CERT_PATH / DATASTORE_SSLROOTCERT"),
        ("invalid peer certificate: Expired", "the server certificate has expired"),
        ("certificate expired", "the server certificate has expired"),
        ("certificate not valid for name", "the server certificate does not name the host in the URI"),
        ("invalid peer certificate", "the server certificate was refused"),
        ("received fatal alert: UnknownCA", "the server refused the client certificate (MONGODB_CLIENT_CERT_PATH / DATASTORE_SSLCERT): not signed by a CA it trusts"),
        ("received fatal alert: BadCertificate", "the server refused the client certificate (MONGODB_CLIENT_CERT_PATH / DATASTORE_SSLCERT)"),
        ("received fatal alert: CertificateRequired", "the server requires a client certificate: set MONGODB_CLIENT_CERT_PATH and MONGODB_CLIENT_KEY_PATH"),
        ("received fatal alert: CertificateExpired", "the server refused the client certificate: it has expired"),
        ("received fatal alert: CertificateUnknown", "the server refused the client certificate (MONGODB_CLIENT_CERT_PATH / DATASTORE_SSLCERT)"),
    ];
    CASES
        .iter()
        .find(|(marker, _)| text.contains(marker))
        .map(|(_, why)| *why)
}

/// A backend failure that a retry may cure, and one it will not.
const TRANSIENT: (ErrorKind, ErrorStatus) = (ErrorKind::Backend, ErrorStatus::Temporary);
const PERMANENT: (ErrorKind, ErrorStatus) = (ErrorKind::Backend, ErrorStatus::Permanent);

/// A kind that retrying never changes.
const fn of(kind: ErrorKind) -> (ErrorKind, ErrorStatus) {
    (kind, ErrorStatus::Permanent)
}

fn code_kind(code: i32) -> (ErrorKind, ErrorStatus) {
    if code == 11_000 || code == 11_001 {
        of(ErrorKind::Duplicate)
    } else if HISTORY_LOST_CODES.contains(&code) {
        of(ErrorKind::HistoryLost)
    } else if TRANSIENT_CODES.contains(&code) {
        TRANSIENT
    } else if INVALID_INPUT_CODES.contains(&code) {
        of(ErrorKind::InvalidInput)
    } else if code == 13 || code == 18 {
        // Unauthorized, AuthenticationFailed.
        of(ErrorKind::Configuration)
    } else if code == 238 {
        // NotImplemented: the server cannot do this at all.
        of(ErrorKind::Unsupported)
    } else {
        PERMANENT
    }
}

/// The server error code of a driver error, if it has one.
pub(crate) fn code_of(e: &MongoError) -> Option<i32> {
    match e.kind.as_ref() {
        Mk::Command(c) => Some(c.code),
        Mk::Write(WriteFailure::WriteError(w)) => Some(w.code),
        Mk::InsertMany(im) => im
            .write_errors
            .as_deref()
            .and_then(<[_]>::first)
            .map(|w| w.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_actionable_kinds() {
        assert_eq!(code_kind(11_000), of(ErrorKind::Duplicate));
        assert_eq!(code_kind(286), of(ErrorKind::HistoryLost));
        assert_eq!(code_kind(260), of(ErrorKind::HistoryLost));
        assert_eq!(code_kind(189), TRANSIENT);
        assert_eq!(code_kind(112), TRANSIENT);
        assert_eq!(code_kind(28), of(ErrorKind::InvalidInput));
        assert_eq!(code_kind(13), of(ErrorKind::Configuration));
        assert_eq!(code_kind(1), PERMANENT);
        assert_eq!(code_kind(238), of(ErrorKind::Unsupported));
    }
}
