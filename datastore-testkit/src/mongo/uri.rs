//! Minimal handling of `mongodb://` URIs: the stand-in's ready line,
//! validation, password masking and extracting the port.

use crate::url::{authority, mask_password};

/// Prefix of the line the stand-in prints on stdout once it accepts
/// connections: `JONGODB_URI=mongodb://127.0.0.1:PORT/test?replicaSet=…`.
pub(crate) const READY_PREFIX: &str = "JONGODB_URI=";

/// The URI in a stand-in ready line (`JONGODB_URI=<uri>`), or `None` if
/// `line` is not one (or carries no `mongodb://` URI).
pub(crate) fn parse_ready_line(line: &str) -> Option<&str> {
    let uri = line.trim().strip_prefix(READY_PREFIX)?.trim();
    (uri.starts_with("mongodb://") && host_port(uri).is_some()).then_some(uri)
}

/// Host and port of the first host in `uri`'s host list (userinfo stripped;
/// IPv6 brackets kept). The port is `None` when the URI names none.
fn host_port(uri: &str) -> Option<(&str, Option<&str>)> {
    let (_, authority) = authority(uri)?;
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let first = hosts.split(',').next()?;
    if first.is_empty() {
        return None;
    }
    let (host, port) = if first.starts_with('[') {
        let end = first.find(']')?;
        let port = first[end + 1..].strip_prefix(':');
        (&first[..=end], port)
    } else {
        match first.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (first, None),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// The port of the first host in `uri` (27017 when the URI names none), or
/// `None` if the URI cannot be parsed or is a `mongodb+srv://` URI.
pub(crate) fn port_of(uri: &str) -> Option<u16> {
    if !uri.starts_with("mongodb://") {
        return None;
    }
    match host_port(uri)?.1 {
        Some(port) => port.parse().ok(),
        None => Some(27017),
    }
}

/// Checks that `uri` looks like a MongoDB connection string; the error
/// message contains the masked URI.
pub(crate) fn validate(uri: &str) -> Result<(), String> {
    let masked = mask_password(uri);
    let lower = uri.to_ascii_lowercase();
    if !(lower.starts_with("mongodb://") || lower.starts_with("mongodb+srv://")) {
        return Err(format!(
            "expected a mongodb:// or mongodb+srv:// URI, got `{masked}`"
        ));
    }
    if uri.chars().any(char::is_whitespace) {
        return Err(format!("URI contains whitespace: `{masked}`"));
    }
    if host_port(uri).is_none() {
        return Err(format!("URI names no host: `{masked}`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_line() {
        assert_eq!(
            parse_ready_line("JONGODB_URI=mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0\n"),
            Some("mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0")
        );
        assert_eq!(
            parse_ready_line("  JONGODB_URI= mongodb://127.0.0.1:1/  \r\n"),
            Some("mongodb://127.0.0.1:1/")
        );
        assert_eq!(parse_ready_line("JONGODB_URI="), None);
        assert_eq!(parse_ready_line("JONGODB_URI=http://127.0.0.1:1/"), None);
        assert_eq!(parse_ready_line("JONGODB_URI=mongodb://"), None);
        assert_eq!(parse_ready_line("starting on port 38291"), None);
        assert_eq!(
            parse_ready_line("XJONGODB_URI=mongodb://127.0.0.1:1/"),
            None
        );
    }

    #[test]
    fn extracts_port() {
        assert_eq!(
            port_of("mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0"),
            Some(38291)
        );
        assert_eq!(
            port_of("mongodb://127.0.0.1:49153/?replicaSet=rs0&directConnection=true"),
            Some(49153)
        );
        assert_eq!(port_of("mongodb://u:p:w@h1:1000,h2:2000/db"), Some(1000));
        assert_eq!(port_of("mongodb://[::1]:27018/"), Some(27018));
        assert_eq!(port_of("mongodb://[::1]/"), Some(27017));
        assert_eq!(port_of("mongodb://db.internal"), Some(27017));
        assert_eq!(port_of("mongodb://h:notaport/"), None);
        assert_eq!(port_of("mongodb+srv://cluster.example.net/"), None);
        assert_eq!(port_of("nonsense"), None);
    }

    #[test]
    fn validates() {
        assert!(validate("mongodb://u:pw@h:27017/?replicaSet=rs0").is_ok());
        assert!(validate("MongoDB+SRV://cluster.example.net").is_ok());
        let err = validate("postgres://u:secret@h/db").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert!(err.contains("u:***@h"), "{err}");
        assert!(validate("mongodb://h /db").is_err());
        assert!(validate("mongodb:///db").is_err());
    }
}
