//! Choosing the server tests run against: external (env var), Docker, or
//! a stand-in (SecantusDB by default, or jongodb).

use std::ffi::OsString;
use std::fmt;
use std::sync::OnceLock;

use crate::lane::{choose, Choice, Options};
#[cfg(feature = "docker")]
use crate::mongo::docker::DockerMongo;
use crate::mongo::{StandIn, StandInServer};
use crate::shared::{shared_in, SharedSlot};
use crate::{HarnessError, Server};

/// How the server of a [`TestMongo`] was obtained (see
/// [`TestMongo::from_env_or_start`] for the order they are tried in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// A server named by `DATASTORE_TEST_MONGODB_URI` or `MONGODB_URI`;
    /// nothing was started.
    External,
    /// A throwaway `mongo:7` container (single-node replica set `rs`), started through
    /// `testcontainers` (cargo feature `docker`).
    Docker,
    /// A stand-in server started by the harness ([`StandInServer`]).
    StandIn(StandIn),
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::External => "external MongoDB (MONGODB_URI)",
            Lane::Docker => "docker mongo:7 (testcontainers)",
            Lane::StandIn(StandIn::SecantusDb) => "SecantusDB stand-in",
            Lane::StandIn(StandIn::Jongodb) => "jongodb stand-in",
        })
    }
}

/// The server a [`TestMongo`] started and owns.
enum Owned {
    #[cfg(feature = "docker")]
    Docker(Box<DockerMongo>),
    StandIn(StandInServer),
}

/// The MongoDB server tests should run against, always a replica set (so
/// transactions and change streams work), chosen by
/// [`TestMongo::from_env_or_start`].
///
/// Tests get the URI with [`TestMongo::uri`] and pick their database through
/// the driver (for example with a name from
/// [`unique_database_name`](crate::mongo::unique_database_name)); the URI's path is
/// left alone because for an external server it may name the authentication
/// database.
///
/// A started server lives as long as this value. The `Debug` output never
/// shows a password.
pub struct TestMongo {
    uri: String,
    lane: Lane,
    /// `None` for an external server.
    server: Option<Owned>,
}

/// Outcome of the one start attempt made by [`TestMongo::shared`]: the
/// instance, or the error's message and output tail.
static SHARED: OnceLock<SharedSlot<TestMongo>> = OnceLock::new();

impl TestMongo {
    /// Environment variable with the URI of an external MongoDB replica set
    /// (lane 1). `MONGODB_URI` ([`TestMongo::FALLBACK_URI_ENV`]) is used
    /// when this one is unset or empty.
    pub const URI_ENV: &'static str = "DATASTORE_TEST_MONGODB_URI";

    /// Second choice for the external server's URI.
    pub const FALLBACK_URI_ENV: &'static str = "MONGODB_URI";

    /// Environment variable that, set to anything but empty, `0`, `false` or
    /// `no`, skips the Docker lane even when a Docker engine is reachable
    /// (for example on CI runners that have Docker but should use the
    /// stand-in).
    pub const NO_DOCKER_ENV: &'static str = "DATASTORE_TEST_MONGODB_NO_DOCKER";

    /// Picks the first available lane:
    ///
    /// 1. **External**: [`TestMongo::URI_ENV`] (`DATASTORE_TEST_MONGODB_URI`)
    ///    or, if that is unset or empty, `MONGODB_URI`, when non-empty. The
    ///    URI is used as is (it must be a `mongodb://` or `mongodb+srv://`
    ///    URI of a replica set, else [`HarnessError::InvalidUrl`]); nothing
    ///    is started.
    /// 2. **Docker** (built with the cargo feature `docker`): when `docker
    ///    info` succeeds within 5 s (and [`TestMongo::NO_DOCKER_ENV`] is not
    ///    set), runs `mongo:7` as the single-node replica set `rs` through
    ///    `testcontainers`; the URI is
    ///    `mongodb://127.0.0.1:PORT/?replicaSet=rs&directConnection=true`.
    ///    A failure here is returned, not skipped over.
    /// 3. **Stand-in**: otherwise [`StandInServer::start`], the stand-in
    ///    named by [`StandIn::SELECT_ENV`] (SecantusDB by default); a missing
    ///    binary gives [`HarnessError::StandInMissing`] with the install
    ///    command.
    ///
    /// A server started here is stopped when the returned value is dropped.
    pub fn from_env_or_start() -> Result<TestMongo, HarnessError> {
        let external = external_uri(|name| std::env::var_os(name))?;
        let choice = choose(
            Options {
                external: external.is_some(),
                // A missing stand-in is reported when it is started.
                local_available: true,
                docker_first: true,
                docker_allowed: cfg!(feature = "docker")
                    && !docker_disabled(std::env::var_os(Self::NO_DOCKER_ENV)),
            },
            crate::process::docker::engine_available,
        );
        match (choice, external) {
            (Choice::External, Some(uri)) => Ok(TestMongo {
                uri,
                lane: Lane::External,
                server: None,
            }),
            #[cfg(feature = "docker")]
            (Choice::Docker, _) => {
                let server = DockerMongo::start().map_err(with_docker_hint)?;
                Ok(TestMongo {
                    uri: server.uri().to_string(),
                    lane: Lane::Docker,
                    server: Some(Owned::Docker(Box::new(server))),
                })
            }
            _ => {
                let server = StandInServer::start()?;
                Ok(TestMongo {
                    uri: server.uri().to_string(),
                    lane: Lane::StandIn(server.kind()),
                    server: Some(Owned::StandIn(server)),
                })
            }
        }
    }

    /// One instance per process, created on first use by
    /// [`TestMongo::from_env_or_start`].
    ///
    /// A server started here is never dropped (statics are not); its
    /// watchdog stops it (or removes the container) within about a second
    /// after the process exits. If the first start fails, every call returns
    /// [`HarnessError::StartFailed`] with the same message.
    pub fn shared() -> Result<&'static TestMongo, HarnessError> {
        shared_in(&SHARED, Server::Mongo, TestMongo::from_env_or_start)
    }

    /// The server's URI, as given in the environment or as printed by the
    /// started server, for example
    /// `mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0`.
    ///
    /// For an external server this includes its password: do not print it
    /// (the `Debug` output masks it).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Which lane the server came from.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// Whether the server is a stand-in started by the harness.
    pub fn is_stand_in(&self) -> bool {
        self.stand_in().is_some()
    }

    /// Which stand-in the server is, if it is one (tests may skip what a
    /// stand-in does not support).
    pub fn stand_in(&self) -> Option<StandIn> {
        match self.lane {
            Lane::StandIn(kind) => Some(kind),
            _ => None,
        }
    }
}

/// The external URI from [`TestMongo::URI_ENV`], else
/// [`TestMongo::FALLBACK_URI_ENV`] (each counts only when set and
/// non-empty), validated; `None` when neither is set. `var` looks a variable
/// up.
fn external_uri(var: impl Fn(&str) -> Option<OsString>) -> Result<Option<String>, HarnessError> {
    for name in [TestMongo::URI_ENV, TestMongo::FALLBACK_URI_ENV] {
        let Some(value) = var(name) else { continue };
        let Some(value) = value.to_str() else {
            return Err(HarnessError::InvalidUrl(
                crate::Server::Mongo,
                format!("{name} is not valid UTF-8"),
            ));
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        crate::mongo::uri::validate(value)
            .map_err(|m| HarnessError::InvalidUrl(crate::Server::Mongo, format!("{name}: {m}")))?;
        return Ok(Some(value.to_string()));
    }
    Ok(None)
}

/// Adds to a Docker-lane start failure how to skip that lane.
#[cfg_attr(not(feature = "docker"), allow(dead_code))]
fn with_docker_hint(error: HarnessError) -> HarnessError {
    match error {
        HarnessError::StartFailed {
            server,
            message,
            log_tail,
        } => HarnessError::StartFailed {
            server,
            message: format!(
                "{message} (set {}=1 to use a stand-in server instead, or {} to use an \
                 external replica set)",
                TestMongo::NO_DOCKER_ENV,
                TestMongo::URI_ENV
            ),
            log_tail,
        },
        other => other,
    }
}

/// Whether the value of [`TestMongo::NO_DOCKER_ENV`] disables the Docker
/// lane.
fn docker_disabled(value: Option<OsString>) -> bool {
    match value {
        None => false,
        Some(value) => {
            let value = value.to_string_lossy().trim().to_ascii_lowercase();
            !matches!(value.as_str(), "" | "0" | "false" | "no")
        }
    }
}

impl fmt::Debug for TestMongo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("TestMongo");
        debug
            .field("uri", &crate::url::mask_password(&self.uri))
            .field("lane", &self.lane);
        match &self.server {
            #[cfg(feature = "docker")]
            Some(Owned::Docker(server)) => debug.field("server", server),
            Some(Owned::StandIn(server)) => debug.field("server", server),
            None => debug.field("server", &"external"),
        };
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn external_uri_prefers_the_datastore_variable() {
        let both = lookup(&[
            (
                "DATASTORE_TEST_MONGODB_URI",
                " mongodb://a:1/?replicaSet=rs0 ",
            ),
            ("MONGODB_URI", "mongodb://b:2/"),
        ]);
        assert_eq!(
            external_uri(both).unwrap().as_deref(),
            Some("mongodb://a:1/?replicaSet=rs0")
        );
        let fallback = lookup(&[
            ("DATASTORE_TEST_MONGODB_URI", "  "),
            ("MONGODB_URI", "mongodb+srv://u:pw@cluster.example.net/"),
        ]);
        assert_eq!(
            external_uri(fallback).unwrap().as_deref(),
            Some("mongodb+srv://u:pw@cluster.example.net/")
        );
        assert_eq!(external_uri(lookup(&[])).unwrap(), None);
        assert_eq!(external_uri(lookup(&[("MONGODB_URI", "")])).unwrap(), None);
    }

    #[test]
    fn invalid_external_uri_is_reported_masked() {
        let bad = lookup(&[("MONGODB_URI", "postgres://u:hunter2@h/db")]);
        match external_uri(bad) {
            Err(HarnessError::InvalidUrl(_, message)) => {
                assert!(message.starts_with("MONGODB_URI: "), "{message}");
                assert!(!message.contains("hunter2"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn docker_failures_say_how_to_skip_docker() {
        let err = with_docker_hint(HarnessError::start_failed(
            crate::Server::Mongo,
            "docker mongo:7: `docker run` failed",
            "pull access denied",
        ));
        let text = err.to_string();
        assert!(
            text.contains("DATASTORE_TEST_MONGODB_NO_DOCKER=1"),
            "{text}"
        );
        assert!(text.contains("pull access denied"), "{text}");
    }

    #[test]
    fn docker_opt_out_values() {
        assert!(!docker_disabled(None));
        for off in ["", "0", "false", "No"] {
            assert!(!docker_disabled(Some(off.into())), "{off}");
        }
        for on in ["1", "true", "yes"] {
            assert!(docker_disabled(Some(on.into())), "{on}");
        }
    }

    #[test]
    fn lane_display() {
        assert_eq!(Lane::External.to_string(), "external MongoDB (MONGODB_URI)");
        assert_eq!(Lane::Docker.to_string(), "docker mongo:7 (testcontainers)");
        assert_eq!(
            Lane::StandIn(StandIn::SecantusDb).to_string(),
            "SecantusDB stand-in"
        );
        assert_eq!(
            Lane::StandIn(StandIn::Jongodb).to_string(),
            "jongodb stand-in"
        );
    }

    #[test]
    fn debug_masks_password() {
        let mongo = TestMongo {
            uri: "mongodb://app:hunter2@db:27017/admin?replicaSet=rs0".to_string(),
            lane: Lane::External,
            server: None,
        };
        assert!(!mongo.is_stand_in());
        let debug = format!("{mongo:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("mongodb://app:***@db:27017/admin"),
            "{debug}"
        );
    }
}
