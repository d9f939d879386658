//! What the everyday commands' arguments select: a collection, a start position, a duration;
//! and the error a bad argument gets.

use std::time::Duration;

use chrono::{DateTime, Utc};
use datastore::config::parse_duration;
use datastore::{Collection, DataStore, StartFrom};

use crate::cli::Target;
use datastore_tools::error::{CliError, CliResult};

/// The collection `target` names.
pub fn collection(store: &dyn DataStore, target: Target) -> &dyn Collection {
    match target {
        Target::HealthEvents => store.health_event_collection(),
        Target::MaintenanceEvents => store.maintenance_event_collection(),
    }
}

/// `now`, `beginning` or an RFC 3339 time, given as `flag` (named in the error).
pub fn start_from(flag: &str, to: &str) -> CliResult<StartFrom> {
    match to {
        "now" => Ok(StartFrom::Now),
        "beginning" => Ok(StartFrom::Beginning),
        t => DateTime::parse_from_rfc3339(t)
            .map(|t| StartFrom::Time(t.with_timezone(&Utc)))
            .map_err(|e| {
                invalid(format!(
                    "{flag} {t:?}: not `now`, `beginning` or an RFC 3339 time such as \
                     2026-12-01T10:00:00Z ({e})"
                ))
            }),
    }
}

/// A duration given as `flag` (`90s`, `36h`, `7d`, `1h30m`), naming the flag when it is not one.
pub fn duration(flag: &str, text: &str) -> CliResult<Duration> {
    parse_duration(text).ok_or_else(|| {
        invalid(format!(
            "{flag} {text:?} is not a duration: give e.g. 90s, 15m, 36h, 7d or 1h30m"
        ))
    })
}

/// The error of a bad argument (`InvalidInput`; nothing was changed).
pub fn invalid(message: impl Into<String>) -> CliError {
    CliError::Datastore(datastore::Error::invalid_input(message))
}
