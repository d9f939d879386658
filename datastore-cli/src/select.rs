//! What the everyday commands' arguments select: a collection and a start position.

use chrono::{DateTime, Utc};
use datastore::{Collection, DataStore, StartFrom};

use crate::cli::Target;
use datastore_cli::error::{CliError, CliResult};

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
                CliError::Datastore(datastore::Error::invalid_input(format!(
                    "{flag} {t:?}: not `now`, `beginning` or an RFC 3339 time such as \
                     2026-12-01T10:00:00Z ({e})"
                )))
            }),
    }
}
