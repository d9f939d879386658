//! The doctor against a healthy and a deliberately broken server (a missing index, a lagging
//! consumer, an unreachable port), certificate files (expired, about to expire, wrong CN), and
//! the MongoDB stand-in.

use std::collections::HashMap;
use std::time::Duration;

use test_certs::{Authority, Validity};

use super::*;

const PATIENT: Limits = Limits {
    max_lag: Duration::from_secs(3600),
};
const IMPATIENT: Limits = Limits {
    max_lag: Duration::ZERO,
};

fn config(port: u16, database: &str, extra: &[(&str, &str)]) -> datastore::Result<DatastoreConfig> {
    let mut vars: HashMap<String, String> = [
        ("DATASTORE_PROVIDER", "postgresql"),
        ("DATASTORE_HOST", "127.0.0.1"),
        ("DATASTORE_USERNAME", "postgres"),
        ("DATASTORE_SSLMODE", "disable"),
        ("DATASTORE_DATABASE", database),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    vars.insert("DATASTORE_PORT".into(), port.to_string());
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    DatastoreConfig::from_vars(&vars)
}

fn status_of<'a>(checks: &'a [Check], name: &str) -> Vec<&'a Check> {
    checks
        .iter()
        .filter(|c| c.check.starts_with(name))
        .collect()
}

fn failures(checks: &[Check]) -> Vec<&Check> {
    checks.iter().filter(|c| c.status == Status::Fail).collect()
}

#[test]
fn a_healthy_then_broken_postgresql() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = datastore_workload::embedded::start_embedded().expect("PostgreSQL");
    rt.block_on(async {
        let (store, _) = datastore_workload::embedded::connect_embedded(&server)
            .await
            .expect("store");
        let database = datastore_workload::embedded::DEMO_DATABASE;
        let healthy = diagnose(config(server.port(), database, &[]), PATIENT, Utc::now()).await;
        assert!(failures(&healthy).is_empty(), "{}", report(&healthy, false));
        for (name, status) in [
            ("configuration", Status::Ok),
            ("connection", Status::Ok),
            ("server", Status::Ok),
            ("tls", Status::Warn),
            ("schema", Status::Ok),
            ("pool", Status::Ok),
            ("indexes", Status::Ok),
            ("change history", Status::Ok),
        ] {
            let found = status_of(&healthy, name);
            assert_eq!(found.len(), 1, "{name}: {}", report(&healthy, false));
            assert_eq!(found[0].status, status, "{}", report(&healthy, false));
        }
        let json: serde_json::Value =
            serde_json::from_str(&report(&healthy, true)).expect("--json");
        assert_eq!(json["ok"], true);

        // A lagging consumer warns.
        crate::testing::checkpointed_after_first(
            store.health_event_collection(),
            "fault-quarantine",
        )
        .await;
        let lagging = diagnose(config(server.port(), database, &[]), IMPATIENT, Utc::now()).await;
        let consumer = status_of(&lagging, "consumer health_events/fault-quarantine");
        assert_eq!(consumer.len(), 1, "{}", report(&lagging, false));
        assert_eq!(consumer[0].status, Status::Warn);
        assert!(
            consumer[0].detail.contains("2 behind"),
            "{}",
            consumer[0].detail
        );

        // A pool larger than the server allows fails.
        let greedy = config(
            server.port(),
            database,
            &[
                ("DATASTORE_MAX_CONNECTIONS", "5000"),
                ("DATASTORE_MAX_IDLE_CONNECTIONS", "1"),
            ],
        );
        let greedy = diagnose(greedy, PATIENT, Utc::now()).await;
        assert_eq!(
            status_of(&greedy, "pool")[0].status,
            Status::Fail,
            "{}",
            report(&greedy, false)
        );

        // A missing idempotency index fails, naming it.
        sqlx::query("ALTER TABLE health_events DROP CONSTRAINT health_events_idempotency_key_key")
            .execute(store.pool())
            .await
            .expect("drop the index");
        let broken = diagnose(config(server.port(), database, &[]), PATIENT, Utc::now()).await;
        let failed = failures(&broken);
        assert_eq!(failed.len(), 1, "{}", report(&broken, false));
        assert!(
            failed[0].check == "indexes" && failed[0].detail.contains("idempotency"),
            "{}",
            report(&broken, false)
        );
        store.close().await;
    });
}

#[test]
fn an_unreachable_server_and_a_bad_configuration_fail() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let checks = rt.block_on(diagnose(config(closed, "x", &[]), PATIENT, Utc::now()));
    let failed = failures(&checks);
    assert_eq!(failed.len(), 1, "{}", report(&checks, false));
    assert_eq!(failed[0].check, "connection");
    let bad = config(5432, "x", &[("DATASTORE_SSLMODE", "sometimes")]);
    let checks = rt.block_on(diagnose(bad, PATIENT, Utc::now()));
    assert_eq!(checks.len(), 1);
    assert!(
        checks[0].status == Status::Fail && checks[0].detail.contains("DATASTORE_SSLMODE"),
        "{checks:?}"
    );
}

#[test]
fn certificates_expired_expiring_and_for_another_user() {
    let dir = std::env::temp_dir().join(format!("doctor-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = Authority::new("doctor test CA").expect("CA");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let (valid, _) = ca.sign("postgres", Validity::Now).expect("sign");
    let (expired, _) = ca.sign("postgres", Validity::Expired).expect("sign");
    let valid = write("valid.crt", &valid);
    let expired = write("expired.crt", &expired);
    let garbage = write("garbage.crt", "not a certificate");
    let now = Utc::now();
    let c = certs::certificate("client certificate", &valid, Some("postgres"), now);
    assert_eq!(c.status, Status::Ok, "{c:?}");
    let c = certs::certificate("client certificate", &valid, Some("datastore"), now);
    assert!(
        c.status == Status::Fail && c.detail.contains("DATASTORE_USERNAME"),
        "{c:?}"
    );
    let c = certs::certificate("client certificate", &expired, Some("postgres"), now);
    assert!(
        c.status == Status::Fail && c.detail.contains("expired"),
        "{c:?}"
    );
    // Near its end: the same valid certificate seen a few days before it expires.
    let days = c_days(&valid, now);
    let late = now + chrono::Duration::days(days - 5);
    let c = certs::certificate("CA certificate", &valid, None, late);
    assert!(
        c.status == Status::Warn && c.detail.contains("expires in"),
        "{c:?}"
    );
    let c = certs::certificate("CA certificate", &garbage, None, now);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    // Through the configuration.
    let cfg = config(
        5432,
        "x",
        &[
            ("DATASTORE_SSLMODE", "verify-full"),
            ("DATASTORE_SSLCERT", expired.to_str().expect("path")),
            ("DATASTORE_SSLKEY", expired.to_str().expect("path")),
            ("DATASTORE_SSLROOTCERT", valid.to_str().expect("path")),
        ],
    )
    .expect("config");
    let checks = certs::check(&cfg, now);
    assert_eq!(checks.len(), 2);
    assert_eq!(
        (checks[0].status, checks[1].status),
        (Status::Fail, Status::Ok)
    );
    std::fs::remove_dir_all(dir).expect("clean up");
}

/// Days until the certificate at `path` expires, read back from the check's detail.
fn c_days(path: &std::path::Path, now: DateTime<Utc>) -> i64 {
    let c = certs::certificate("c", path, None, now);
    let after = c.detail.split("expires in ").nth(1).expect("days");
    after
        .split(' ')
        .next()
        .and_then(|d| d.parse().ok())
        .expect("a number")
}

#[test]
fn a_healthy_mongodb() {
    crate::testing::on_mongodb(async |store| {
        crate::testing::checkpointed_after_first(
            store.health_event_collection(),
            "fault-quarantine",
        )
        .await;
        let checks = store_checks(store, None, IMPATIENT, Utc::now()).await;
        assert!(failures(&checks).is_empty(), "{}", report(&checks, false));
        assert!(
            status_of(&checks, "server")[0]
                .detail
                .starts_with("MongoDB"),
            "{}",
            report(&checks, false)
        );
        assert_eq!(status_of(&checks, "indexes")[0].status, Status::Ok);
        let consumer = status_of(&checks, "consumer HealthEvents/fault-quarantine");
        assert_eq!(
            consumer[0].status,
            Status::Warn,
            "{}",
            report(&checks, false)
        );
    });
}

#[test]
fn certificate_authentication_over_tls() {
    use datastore_testkit::postgres::tls::{ServerCert, TlsServer, CERT_USER, SERVER_NAME};
    use sqlx::Connection;

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = TlsServer::start(ServerCert::Valid).expect("TLS test server");
    rt.block_on(async {
        let name = provider_postgres::fresh_test_database(&server.admin_url("postgres"))
            .await
            .expect("database");
        let mut admin = sqlx::PgConnection::connect(&server.admin_url(&name))
            .await
            .expect("admin connection");
        for sql in TlsServer::spec_grants(&name) {
            sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
        }
        let f = server.files();
        let path = |p: &std::path::Path| p.to_str().expect("a UTF-8 path").to_owned();
        let (cert, key, ca) = (path(&f.client_cert), path(&f.client_key), path(&f.ca));
        let mut vars: HashMap<String, String> = [
            ("DATASTORE_PROVIDER", "postgresql"),
            ("DATASTORE_HOST", SERVER_NAME),
            ("DATASTORE_DATABASE", name.as_str()),
            ("DATASTORE_USERNAME", CERT_USER),
            ("DATASTORE_SSLMODE", "verify-full"),
            ("DATASTORE_SSLCERT", cert.as_str()),
            ("DATASTORE_SSLKEY", key.as_str()),
            ("DATASTORE_SSLROOTCERT", ca.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        vars.insert("DATASTORE_PORT".into(), server.port().to_string());
        let checks = diagnose(DatastoreConfig::from_vars(&vars), PATIENT, Utc::now()).await;
        assert!(failures(&checks).is_empty(), "{}", report(&checks, false));
        let tls = status_of(&checks, "tls");
        assert_eq!(tls[0].status, Status::Ok, "{}", report(&checks, false));
        assert!(
            tls[0].detail.contains("TLSv1.") && tls[0].detail.contains(CERT_USER),
            "{}",
            tls[0].detail
        );
        for name in ["client certificate", "CA certificate"] {
            assert_eq!(
                status_of(&checks, name)[0].status,
                Status::Ok,
                "{}",
                report(&checks, false)
            );
        }
    });
}
