//! Minimal handling of `postgres://` URLs: validation, password masking and
//! replacing the database (path) component.

use crate::url::mask_password;

/// Pieces of a URL: `scheme://authority` + path + `rest` (query/fragment).
struct Parts<'a> {
    /// `scheme://authority` (no trailing slash).
    prefix: &'a str,
    /// `?query` and/or `#fragment`, verbatim (may be empty).
    rest: &'a str,
}

fn split(url: &str) -> Option<Parts<'_>> {
    let scheme_end = url.find("://")?;
    let after = scheme_end + 3;
    let authority_len = url[after..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - after);
    let prefix_end = after + authority_len;
    let rest_start = url[prefix_end..]
        .find(['?', '#'])
        .map(|i| prefix_end + i)
        .unwrap_or(url.len());
    Some(Parts {
        prefix: &url[..prefix_end],
        rest: &url[rest_start..],
    })
}

/// Checks that `url` looks like a PostgreSQL connection URL; the error
/// message contains the masked URL.
pub(crate) fn validate(url: &str) -> Result<(), String> {
    let masked = mask_password(url);
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Err(format!(
            "expected a postgres:// or postgresql:// URL, got `{masked}`"
        ));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("URL contains whitespace: `{masked}`"));
    }
    Ok(())
}

/// Returns `url` with its path replaced by `/database` (percent-encoded),
/// keeping scheme, credentials, host, port, query string and fragment.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    match split(url) {
        Some(parts) => format!(
            "{}/{}{}",
            parts.prefix,
            encode_path_segment(database),
            parts.rest
        ),
        None => url.to_string(),
    }
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_and_keeps_query() {
        assert_eq!(
            with_database(
                "postgres://u:pw@h:5432/postgres?sslmode=disable&x=1",
                "other"
            ),
            "postgres://u:pw@h:5432/other?sslmode=disable&x=1"
        );
        assert_eq!(
            with_database("postgres://h:5432", "db"),
            "postgres://h:5432/db"
        );
        assert_eq!(
            with_database("postgres://h/?application_name=a", "db"),
            "postgres://h/db?application_name=a"
        );
        assert_eq!(
            with_database("postgres:///postgres?host=/run/postgresql", "db"),
            "postgres:///db?host=/run/postgresql"
        );
        assert_eq!(
            with_database("postgres://h/postgres#frag", "a b/c"),
            "postgres://h/a%20b%2Fc#frag"
        );
    }

    #[test]
    fn validates_scheme() {
        assert!(validate("postgres://u:pw@h/db").is_ok());
        assert!(validate("PostgreSQL://h/db").is_ok());
        let err = validate("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert!(err.contains("u:***@h"), "{err}");
    }
}
