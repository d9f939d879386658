//! Which backend: [`ProviderKind`], as `DATASTORE_PROVIDER` names it.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The backends this API can run on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// PostgreSQL (JSONB documents).
    Postgresql,
    /// MongoDB.
    Mongodb,
}

impl ProviderKind {
    /// The name used in `DATASTORE_PROVIDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Postgresql => "postgresql",
            ProviderKind::Mongodb => "mongodb",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "postgresql" | "postgres" => Ok(ProviderKind::Postgresql),
            "mongodb" | "mongo" => Ok(ProviderKind::Mongodb),
            other => Err(Error::configuration(format!(
                "DATASTORE_PROVIDER: unknown provider {other:?} (expected \"postgresql\" or \"mongodb\")"
            ))),
        }
    }
}
