//! Unique database names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest name [`unique_database_name`] returns.
const MAX_LEN: usize = 38;

/// Distinguishes names made by one process within the same nanosecond.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database name no other test (in this process, in a concurrent process,
/// or in an earlier run against the same external server) uses:
/// `<prefix>_<pid>_<counter>_<nanos>`, the numbers in base 36.
///
/// The prefix is lower-cased, characters other than `[a-z0-9_]` become `_`,
/// and it is shortened so the whole name has at most 38 characters (well
/// within MongoDB's 64-byte limit for database names); an empty prefix
/// becomes `db`. The result only contains `[a-z0-9_]`, so it is valid on
/// every platform and needs no escaping in a URI.
///
/// ```
/// let name = datastore_testkit::mongo::unique_database_name("outbox-Tests");
/// assert!(name.starts_with("outbox_tests_"));
/// assert!(name.len() <= 38);
/// assert_ne!(name, datastore_testkit::mongo::unique_database_name("outbox-Tests"));
/// ```
pub fn unique_database_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    name_from(
        prefix,
        u128::from(std::process::id()),
        u128::from(counter),
        nanos,
    )
}

/// [`unique_database_name`] with the varying parts given.
fn name_from(prefix: &str, pid: u128, counter: u128, nanos: u128) -> String {
    let suffix = format!("_{}_{}_{}", base36(pid), base36(counter), base36(nanos));
    let mut name: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(MAX_LEN.saturating_sub(suffix.len()))
        .collect();
    if name.is_empty() {
        name.push_str("db");
    }
    name.push_str(&suffix);
    // Only reachable for absurd inputs (the suffix alone is at most
    // 1 + 7 + 1 + 13 + 1 + 25 characters); keep the promise anyway.
    name.truncate(MAX_LEN);
    name
}

/// `n` in base 36 (digits then lower-case letters).
fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(u128::from(u64::MAX)), "3w5e11264sgsf");
    }

    #[test]
    fn names_are_sanitised_and_bounded() {
        assert_eq!(name_from("Conf.Test-1", 1234, 5, 36), "conf_test_1_ya_5_10");
        assert_eq!(name_from("", 1, 0, 0), "db_1_0_0");
        assert_eq!(name_from("é/$ x", 1, 0, 0), "____x_1_0_0");
        let long = name_from(
            &"p".repeat(100),
            4_194_304,
            999_999,
            1_800_000_000_000_000_000,
        );
        assert!(valid(&long), "{long}");
        assert_eq!(long.len(), MAX_LEN);
        assert!(long.starts_with("ppp"), "{long}");
        assert!(long.ends_with(&format!("_{}", base36(1_800_000_000_000_000_000))));
        let huge = name_from("x", u128::MAX, u128::MAX, u128::MAX);
        assert!(valid(&huge), "{huge}");
    }

    #[test]
    fn names_are_unique() {
        let names: HashSet<String> = (0..10_000)
            .map(|_| unique_database_name("conformance_suite"))
            .collect();
        assert_eq!(names.len(), 10_000);
        for name in names.iter().take(100) {
            assert!(valid(name), "{name}");
            assert!(name.starts_with("conformance_"), "{name}");
        }
        let pid = base36(u128::from(std::process::id()));
        let name = unique_database_name("t");
        assert!(name.starts_with(&format!("t_{pid}_")), "{name}");
    }
}
