//! `datastore doctor`: what NVSentinel's validation script promised, checked at the database
//! the configuration names: the provider and its settings, the certificate files, connectivity
//! and the server, TLS as the server sees the session, the schema version, the indexes
//! correctness needs, every consumer's checkpoint, backlog and lease, the change history, and
//! the pool against the server's connection limit. One `✓` / `⚠` / `✗` line per check (or
//! `--json`); any `✗` makes the exit code 1.
//!
//! Connecting is what every component does at start, so it also applies pending schema
//! migrations (PostgreSQL) or creates missing indexes (MongoDB).

use std::fmt::Display;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datastore::{DataStore, DatastoreConfig, ErrorKind, Filter, ProviderKind, TlsState};
use serde::Serialize;
use serde_json::json;

use crate::cli::DoctorArgs;
use datastore_tools::error::{CliError, CliResult};

pub mod certs;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but needs attention.
    Warn,
    /// Broken: the detail says what to do.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was found (and, when not `ok`, what to do).
    pub detail: String,
}

impl Check {
    fn new(check: &str, status: Status, detail: impl Display) -> Self {
        Check {
            check: check.to_owned(),
            status,
            detail: detail.to_string(),
        }
    }
    /// A passed check.
    pub fn ok(check: &str, detail: impl Display) -> Self {
        Check::new(check, Status::Ok, detail)
    }
    /// A warning.
    pub fn warn(check: &str, detail: impl Display) -> Self {
        Check::new(check, Status::Warn, detail)
    }
    /// A failed check.
    pub fn fail(check: &str, detail: impl Display) -> Self {
        Check::new(check, Status::Fail, detail)
    }
}

/// How long the checks of an open store may take together.
const CHECKS_LIMIT: Duration = Duration::from_secs(120);

/// Thresholds of the checks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A consumer whose oldest unprocessed change waits longer than this is lagging.
    pub max_lag: Duration,
}

/// Runs every check on the configured server and prints the report.
pub async fn run(args: &DoctorArgs) -> CliResult<()> {
    let limits = Limits {
        max_lag: crate::select::duration("--max-lag", &args.max_lag)?,
    };
    let checks = diagnose(DatastoreConfig::from_env(), limits, Utc::now()).await;
    datastore_tools::output::print(&report(&checks, args.json))?;
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        return Err(CliError::check(format!(
            "{failed} of {} doctor checks failed: the ✗ lines say what to do",
            checks.len()
        )));
    }
    Ok(())
}

/// The checks of `config`'s server.
pub async fn diagnose(
    config: datastore::Result<DatastoreConfig>,
    limits: Limits,
    now: DateTime<Utc>,
) -> Vec<Check> {
    let config = match config {
        Ok(config) => config,
        Err(e) => return vec![Check::fail("configuration", e.message())],
    };
    let c = &config.connection;
    let mut checks = vec![Check::ok(
        "configuration",
        format!("provider {}", crate::target::describe(&config)),
    )];
    checks.extend(certs::check(&config, now));
    let started = Instant::now();
    // Each connection attempt is bounded by the connect timeout; this bounds all of them.
    let limit = c.connect_timeout * 3 + Duration::from_secs(5);
    match tokio::time::timeout(limit, datastore::connect(&config)).await {
        Ok(Ok(store)) => {
            checks.push(Check::ok(
                "connection",
                format!("connected in {} ms", started.elapsed().as_millis()),
            ));
            let checked = store_checks(store.as_ref(), Some(&config), limits, now);
            match tokio::time::timeout(CHECKS_LIMIT, checked).await {
                Ok(found) => checks.extend(found),
                Err(_) => checks.push(Check::fail(
                    "server",
                    format!(
                        "the checks did not finish within {CHECKS_LIMIT:?}: is the server \
                         overloaded, or a lock (a migration, VACUUM FULL) held?"
                    ),
                )),
            }
            store.close().await;
        }
        // Connecting verifies the indexes: a missing one is an index problem, not a dead server.
        Ok(Err(e)) if e.index_problem().is_some() => {
            checks.push(Check::ok(
                "connection",
                "the server answers; connecting stopped at its index check",
            ));
            checks.push(Check::fail("indexes", e.message()));
        }
        Ok(Err(e)) => checks.push(Check::fail("connection", e)),
        Err(_) => checks.push(Check::fail(
            "connection",
            format!("no answer within {limit:?}: is the server up and reachable?"),
        )),
    }
    checks
}

/// The checks that need an open store (`config` adds the pool and TLS settings).
pub async fn store_checks(
    store: &dyn DataStore,
    config: Option<&DatastoreConfig>,
    limits: Limits,
    now: DateTime<Utc>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    match store.server_info().await {
        Ok(info) => {
            checks.push(Check::ok("server", &info.version));
            checks.push(tls(store.provider(), &info.tls, config));
            if let Some(schema) = info.schema {
                checks.push(if schema.applied == schema.latest {
                    Check::ok(
                        "schema",
                        format!(
                            "version {} (this build's newest); migration checksums verified",
                            schema.applied
                        ),
                    )
                } else {
                    Check::fail(
                        "schema",
                        format!(
                            "version {} on the server, {} in this build: run `datastore migrate`",
                            schema.applied, schema.latest
                        ),
                    )
                });
            }
            if let (Some(server), Some(config)) = (info.max_connections, config) {
                checks.push(pool(config.pool.max_connections, server));
            }
        }
        Err(e) => checks.push(Check::warn("server", e)),
    }
    checks.push(match store.check_ready().await {
        Ok(()) => Check::ok(
            "indexes",
            "present, right and built (the unique indexes behind idempotent inserts and eventId)",
        ),
        Err(e) => Check::fail("indexes", e),
    });
    checks.extend(consumers(store, limits, now).await);
    checks.push(match store.stats().await {
        Ok(stats) => history(&stats, now),
        Err(e) => Check::warn("change history", e),
    });
    checks
}

fn tls(provider: ProviderKind, state: &TlsState, config: Option<&DatastoreConfig>) -> Check {
    match state {
        TlsState::Encrypted {
            version,
            cipher,
            client_dn,
        } => {
            let client = client_dn.as_deref().map_or_else(
                || "no client certificate".to_owned(),
                |dn| format!("client certificate {dn}"),
            );
            Check::ok(
                "tls",
                format!(
                    "encrypted: {}, {}, {client}",
                    version.as_deref().unwrap_or("?"),
                    cipher.as_deref().unwrap_or("?")
                ),
            )
        }
        TlsState::Plaintext => Check::warn(
            "tls",
            "not encrypted: set DATASTORE_SSLMODE=verify-full with DATASTORE_SSLROOTCERT (and a \
             client certificate) to encrypt and authenticate the server",
        ),
        TlsState::Unknown => {
            let configured = config.is_some_and(|c| c.connection.ssl_root_cert.is_some())
                || std::env::var_os("MONGODB_CA_CERT_PATH").is_some_and(|v| !v.is_empty());
            let what = format!("the {provider} server does not report this session's encryption");
            if configured {
                Check::ok("tls", format!("a CA is configured; {what}"))
            } else {
                Check::warn(
                    "tls",
                    format!("{what}, and no CA is configured: set MONGODB_CA_CERT_PATH or DATASTORE_SSLROOTCERT"),
                )
            }
        }
    }
}

fn pool(pool_max: u32, server_max: u64) -> Check {
    // PostgreSQL keeps superuser_reserved_connections (3 by default) for administrators.
    let usable = server_max.saturating_sub(3);
    let detail = format!(
        "this pool opens up to {pool_max} of the server's {server_max} connections (each \
         replica of a component has a pool of its own)"
    );
    if u64::from(pool_max) > usable {
        Check::fail(
            "pool",
            format!("{detail}: lower DATASTORE_MAX_CONNECTIONS below {usable} or raise the server's max_connections"),
        )
    } else if u64::from(pool_max) * 4 > usable {
        Check::warn(
            "pool",
            format!("{detail}: four replicas would exhaust the server"),
        )
    } else {
        Check::ok("pool", detail)
    }
}

async fn consumers(store: &dyn DataStore, limits: Limits, now: DateTime<Utc>) -> Vec<Check> {
    let mut checks = Vec::new();
    for collection in [
        store.health_event_collection(),
        store.maintenance_event_collection(),
    ] {
        let name = collection.name();
        let listed = match collection.consumers().await {
            Ok(listed) => listed,
            Err(e) => {
                checks.push(Check::warn("consumers", format!("{name}: {e}")));
                continue;
            }
        };
        for c in listed {
            let label = format!("consumer {name}/{}", c.consumer);
            let lease = c.lease_holder.as_deref().map_or_else(
                || "no lease held".to_owned(),
                |holder| format!("lease held by {holder}"),
            );
            let checkpoint = c.checkpointed_at.map_or_else(
                || "no checkpoint".to_owned(),
                |t| format!("checkpoint {} ago", crate::consumers::age(now - t)),
            );
            checks.push(match collection.lag(&c.consumer, &Filter::All).await {
                Ok(lag) => {
                    let waiting = lag.oldest_undelivered_age.unwrap_or_default();
                    let line = format!("{checkpoint}, {} behind, {lease}", lag.events_behind);
                    if lag.events_behind > 0 && waiting > limits.max_lag {
                        Check::warn(
                            &label,
                            format!(
                                "{line}; its oldest unprocessed change waits {}: is the component running?",
                                crate::consumers::age(chrono::Duration::from_std(waiting).unwrap_or_default())
                            ),
                        )
                    } else {
                        Check::ok(&label, line)
                    }
                }
                Err(e) if e.kind() == ErrorKind::HistoryLost => Check::fail(
                    &label,
                    format!(
                        "{checkpoint}: it falls in pruned history; move it with `datastore \
                         consumers reset {} --to now` (or `beginning`) once you know what it missed",
                        c.consumer
                    ),
                ),
                Err(e) => Check::warn(&label, e),
            });
        }
    }
    if checks.is_empty() {
        checks.push(Check::ok("consumers", "none yet"));
    }
    checks
}

fn history(stats: &datastore::StoreStats, now: DateTime<Utc>) -> Check {
    let Some(h) = &stats.change_history else {
        return Check::warn("change history", "the server does not report it");
    };
    let oldest = h.oldest.map(|t| now - t);
    let line = format!(
        "{} changes in {}, oldest {}",
        h.changes,
        h.source,
        oldest.map_or_else(
            || "none".to_owned(),
            |a| format!("{} ago", crate::consumers::age(a))
        )
    );
    let retention = datastore::RetentionPolicy::default().max_age;
    let stale = oldest.is_some_and(|a| a.to_std().unwrap_or_default() > retention * 2);
    if stale && h.source == "datastore_changes" {
        Check::warn(
            "change history",
            format!("{line}: older than twice the 7-day retention; run `datastore prune --max-age 7d` on a schedule"),
        )
    } else {
        Check::ok("change history", line)
    }
}

/// The report as `✓ / ⚠ / ✗` lines or JSON.
pub fn report(checks: &[Check], json: bool) -> String {
    if json {
        let ok = checks.iter().all(|c| c.status != Status::Fail);
        return format!("{}\n", json!({ "ok": ok, "checks": checks }));
    }
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let mark = match c.status {
            Status::Ok => '✓',
            Status::Warn => '⚠',
            Status::Fail => '✗',
        };
        out.push_str(&format!("{mark} {:<width$}  {}\n", c.check, c.detail));
    }
    out
}

#[cfg(test)]
mod tests;
