//! PostgreSQL-specific behaviour against a real server (datastore-testkit or DATASTORE_TEST_POSTGRES_URL):
//! pool settings, migrations, error classification, stored shape. The API semantics themselves
//! are pinned by the conformance suite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use std::time::Duration;

use datastore_api::model::{health_event_document, HealthEvent, HealthEventStatus};
use datastore_api::{
    DataStore, DatastoreConfig, ErrorKind, Filter, FindOptions, PoolConfig, Scalar, Update, Value,
};
use datastore_testkit::postgres::TestPostgres;
use provider_postgres::{fresh_test_database, PgDataStore};
use sqlx::Row;

fn server() -> &'static TestPostgres {
    TestPostgres::shared().expect("test PostgreSQL")
}

async fn fresh_url() -> String {
    let db = fresh_test_database(server().admin_url())
        .await
        .expect("fresh database");
    server().url_for(&db)
}

/// The stream's next change within `limit`; panics with `what` when none comes.
async fn next_change(
    stream: &mut datastore_api::ChangeStream,
    limit: Duration,
    what: &str,
) -> datastore_api::ChangeEvent {
    use futures::StreamExt;
    tokio::time::timeout(limit, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no change within {limit:?}: {what}"))
        .unwrap_or_else(|| panic!("the stream ended: {what}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn fresh(pool: PoolConfig) -> (PgDataStore, String) {
    let url = fresh_url().await;
    (
        PgDataStore::connect_url(&url, pool).await.expect("connect"),
        url,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limits_are_applied() {
    let pool = PoolConfig {
        max_connections: 3,
        max_idle_connections: 1,
        connection_max_lifetime: Duration::from_secs(1),
    };
    let (store, _) = fresh(pool).await;
    let mut busy = Vec::new();
    for _ in 0..10 {
        let p = store.pool().clone();
        busy.push(tokio::spawn(async move {
            sqlx::query("SELECT pg_sleep(0.2)").execute(&p).await.expect("sleep");
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'",
            )
            .fetch_one(&p)
            .await
            .expect("count")
        }));
    }
    for b in busy {
        let seen = b.await.expect("task");
        assert!(
            seen <= 3,
            "{seen} server connections with max_connections = 3"
        );
    }
    assert!(store.pool().size() <= 3);
    // Releases racing each other may keep one too many for a moment; the limit holds once they
    // settle (and never settles if it is not enforced).
    let settled = tokio::time::Instant::now() + Duration::from_secs(3);
    while store.pool().num_idle() > 1 && tokio::time::Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store.pool().num_idle() <= 1,
        "{} idle with max_idle_connections = 1",
        store.pool().num_idle()
    );

    // Lifetime: a connection older than the limit is replaced.
    let first: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut pids = Vec::new();
    for _ in 0..3 {
        pids.push(
            sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                .fetch_one(store.pool())
                .await
                .unwrap(),
        );
    }
    assert!(
        !pids.contains(&first),
        "connection outlived connection_max_lifetime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_are_safe_and_newer_schemas_refused() {
    let url = fresh_url().await;
    let mut starts = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        starts.push(tokio::spawn(async move {
            PgDataStore::connect_url(&url, PoolConfig::default()).await
        }));
    }
    let mut stores = Vec::new();
    for s in starts {
        stores.push(
            s.await
                .expect("task")
                .expect("concurrent connect + migrate"),
        );
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM datastore_schema_migrations ORDER BY version")
            .fetch_all(stores[0].pool())
            .await
            .unwrap();
    assert_eq!(
        versions,
        (1..=provider_postgres::migrate::latest_version()).collect::<Vec<i64>>()
    );

    exec(&stores[0], "INSERT INTO datastore_schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')").await;
    let err = PgDataStore::connect_url(&url, PoolConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("newer"), "{err}");

    exec(
        &stores[0],
        "DELETE FROM datastore_schema_migrations WHERE version = 999",
    )
    .await;
    exec(
        &stores[0],
        "UPDATE datastore_schema_migrations SET checksum = 'tampered' WHERE version = 1",
    )
    .await;
    let err = PgDataStore::connect_url(&url, PoolConfig::default())
        .await
        .unwrap_err();
    assert!(err.is_permanent_backend(), "{err}");
}

async fn exec(store: &PgDataStore, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.expect(sql);
}

fn config(vars: &[(&str, String)]) -> DatastoreConfig {
    let map = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    DatastoreConfig::from_vars(&map).expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_typed_and_never_show_the_password() {
    // A port nobody listens on: transient.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let secret = "s3cret-Pa55word".to_owned();
    let base = |port: u16, db: &str| {
        config(&[
            ("DATASTORE_PROVIDER", "postgresql".into()),
            ("DATASTORE_HOST", "127.0.0.1".into()),
            ("DATASTORE_PORT", port.to_string()),
            ("DATASTORE_DATABASE", db.into()),
            ("DATASTORE_USERNAME", "postgres".into()),
            ("DATASTORE_PASSWORD", secret.clone()),
            ("DATASTORE_SSLMODE", "disable".into()),
        ])
    };
    let err = PgDataStore::connect(&base(port, "postgres"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!format!("{err} {err:?}").contains(&secret));

    if server().is_external() {
        return;
    }
    let url = server().admin_url().to_owned();
    let real_port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|s| s.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let err = PgDataStore::connect(&base(real_port, "no_such_database"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(!format!("{err} {err:?}").contains(&secret));

    // TLS required but the throwaway server has none: a clear error, not a plaintext fallback.
    let mut tls = base(real_port, "postgres");
    tls.connection.ssl_mode = datastore_api::SslMode::Require;
    let err = PgDataStore::connect(&tls).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_shape_is_canonical_and_values_are_bound() {
    let (store, _) = fresh(PoolConfig::default()).await;
    let event = HealthEvent {
        node_name: "node-'; DROP TABLE health_events; --".into(),
        is_fatal: true,
        ..Default::default()
    };
    let ins = store
        .health_events()
        .insert(&event, &HealthEventStatus::default())
        .await
        .unwrap();
    let row = sqlx::query("SELECT id, created_at, document FROM health_events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let doc: Value = row.get("document");
    assert_eq!(
        Value::Object(health_event_document(&event, &HealthEventStatus::default())),
        doc
    );
    assert!(
        doc.get("_id").is_none() && doc.get("createdAt").is_none(),
        "id and createdAt live in columns"
    );
    assert_eq!(doc["healthevent"]["isfatal"], Value::Bool(true));
    assert_eq!(doc["healthevent"]["ishealthy"], Value::Bool(false));
    let id: String = row.get("id");
    assert_eq!(id, ins.id.to_string());

    let found = store
        .health_events()
        .find_by_node(&event.node_name)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // Odd keys are quoted inside the bound jsonpath, never spliced into SQL.
    let odd = Filter::eq("we\"ird key.x\\y", Scalar::Null);
    assert_eq!(
        store.health_event_collection().count(&odd).await.unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_store_and_ended_transactions_fail_cleanly() {
    let (store, _) = fresh(PoolConfig::default()).await;
    let tx = store.begin().await.unwrap();
    tx.health_event_collection()
        .insert_one(Default::default())
        .await
        .unwrap();
    drop(tx); // rolled back
    assert_eq!(
        store
            .health_event_collection()
            .count(&Filter::All)
            .await
            .unwrap(),
        0
    );

    store.close().await;
    let err = store
        .health_event_collection()
        .update_many(&Filter::All, &Update::new().set("a", 1))
        .await
        .unwrap_err();
    assert!(err.is_permanent_backend(), "{err}");
    let err = store
        .health_event_collection()
        .find(&Filter::All, &FindOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_permanent_backend());
    assert!(store.ping().await.is_err());
}

/// A server restart under a live change stream loses and repeats nothing: the stream retries
/// transient errors with its position in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_survives_a_server_restart() {
    use datastore_api::{StartFrom, WatchOptions};
    use futures::StreamExt;

    // Its own server: restarting the shared one would disturb other tests.
    let mut server = datastore_testkit::postgres::PgServer::start().expect("server");
    provider_postgres::create_database(&server.url("postgres"), "restart")
        .await
        .unwrap();
    let store = PgDataStore::connect_url(&server.url("restart"), PoolConfig::default())
        .await
        .unwrap();
    let coll = store.health_event_collection();
    let mut options = WatchOptions::new("restart-test").start(StartFrom::Now);
    options.poll_interval = Duration::from_millis(20);
    let mut stream = coll.watch(options).await.unwrap();
    let insert =
        |i: i64| coll.insert_one(serde_json::from_value(serde_json::json!({"i": i})).unwrap());
    for i in 0..5 {
        insert(i).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = next_change(
            &mut stream,
            Duration::from_secs(10),
            "a change before the restart",
        )
        .await;
        seen.push(e.full_document.unwrap()["i"].as_i64().unwrap());
    }
    let server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart");
        server
    })
    .await
    .unwrap();
    let mut i = 5;
    while i < 10 {
        // A write that meets a connection broken by the restart fails as retryable.
        match insert(i).await {
            Ok(_) => i += 1,
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
    for _ in 5..10 {
        let e = next_change(
            &mut stream,
            Duration::from_secs(30),
            "a change after the restart",
        )
        .await;
        seen.push(e.full_document.unwrap()["i"].as_i64().unwrap());
    }
    assert_eq!(seen, (0..10).collect::<Vec<i64>>());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "no duplicate after the restart"
    );
    drop(server);
}

/// A tick taken by one reader wakes the store's other idle readers (one NOTIFY per tick): a
/// stream polling every 60 s still gets a change within seconds once another stream has cut
/// the batch holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_wakes_idle_readers() {
    use datastore_api::{StartFrom, WatchOptions};
    use futures::StreamExt;

    let (store, _) = fresh(PoolConfig::default()).await;
    let coll = store.health_event_collection();
    let options = |consumer: &str, poll_ms: u64| {
        let mut o = WatchOptions::new(consumer).start(StartFrom::Now);
        o.poll_interval = Duration::from_millis(poll_ms);
        o
    };
    let mut sleepy = coll.watch(options("sleepy", 60_000)).await.unwrap();
    let mut quick = coll.watch(options("quick", 10)).await.unwrap();
    // Let the sleepy reader find nothing and start its long wait.
    let first = tokio::time::timeout(Duration::from_millis(500), sleepy.next()).await;
    assert!(first.is_err(), "nothing was written yet");
    let id = coll
        .insert_one(serde_json::from_value(serde_json::json!({"n": 1})).unwrap())
        .await
        .unwrap()
        .id;
    let by_quick = next_change(
        &mut quick,
        Duration::from_secs(10),
        "the polling reader takes the tick",
    )
    .await;
    assert_eq!(by_quick.document_id, id);
    let by_sleepy = next_change(
        &mut sleepy,
        Duration::from_secs(20),
        "woken by the tick's notification, long before its 60 s poll",
    )
    .await;
    assert_eq!(by_sleepy.document_id, id);
}

/// Taking a tick needs READ COMMITTED (each statement after the tick lock sees a new snapshot);
/// under another isolation level it fails clearly instead of colliding on tick numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_tick_refuses_snapshot_isolation() {
    let (store, _) = fresh(PoolConfig::default()).await;
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("SELECT datastore_take_tick(true)")
        .execute(&mut *tx)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("needs READ COMMITTED"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_tokens_the_stream_never_issued_are_refused() {
    use datastore_api::ResumeToken;
    let (store, _) = fresh(PoolConfig::default()).await;
    let coll = store.health_event_collection();
    coll.insert_one(Default::default()).await.unwrap();
    for bad in [
        "9223372036854775807.9223372036854775807",
        "0000000000000000001.9223372036854775807",
        "+1.+0",
        "0000000000000000001.00000",
        "",
    ] {
        let err = coll
            .checkpoint("c", &ResumeToken::from_string(bad))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
    }
    // A token the stream did issue is stored.
    let mut stream = coll
        .watch(datastore_api::WatchOptions::new("c").start(datastore_api::StartFrom::Beginning))
        .await
        .unwrap();
    let event = next_change(&mut stream, Duration::from_secs(10), "the insert").await;
    coll.checkpoint("c", &event.token).await.unwrap();
}

/// The change-stream LISTEN connection is replaced after `connection_max_lifetime` like every
/// pooled connection (so it too picks up rotated certificates), and wake-ups still work after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_connection_obeys_the_max_lifetime() {
    use datastore_api::{StartFrom, WatchOptions};
    let pool = PoolConfig {
        max_connections: 8,
        max_idle_connections: 8,
        connection_max_lifetime: Duration::from_secs(1),
    };
    let (store, _) = fresh(pool).await;
    let coll = store.health_event_collection();
    let mut options = WatchOptions::new("listen-lifetime").start(StartFrom::Now);
    options.poll_interval = Duration::from_secs(60);
    let mut stream = coll.watch(options).await.unwrap();
    let listener = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_optional(store.pool())
        .await
        .unwrap()
    };
    let mut first = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while first.is_none() && std::time::Instant::now() < deadline {
        first = listener().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("a listening connection");
    let mut replaced = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !replaced && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        replaced = listener().await.is_some_and(|pid| pid != first);
    }
    assert!(
        replaced,
        "the LISTEN connection {first} outlived the 1 s lifetime"
    );
    // The new listener still wakes the reader (its poll is 60 s away).
    let id = coll.insert_one(Default::default()).await.unwrap().id;
    let event = next_change(&mut stream, Duration::from_secs(20), "woken after the swap").await;
    assert_eq!(event.document_id, id);
}

/// A call the caller gives up (a timeout drops it) stops its statement on the server: the
/// connection is closed instead of going back to the pool, and the server notices the closed
/// client within about a second (`client_connection_check_interval`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_up_call_stops_its_statement_on_the_server() {
    let (store, _) = fresh(PoolConfig::default()).await;
    let coll = store.health_event_collection();
    let doc = serde_json::from_value(serde_json::json!({"n": 1})).unwrap();
    let id = coll.insert_one(doc).await.unwrap().id;
    let this = Filter::eq("_id", id.as_str());
    // A transaction holds the document's row lock.
    let tx = store.begin().await.unwrap();
    tx.health_event_collection()
        .update_many(&this, &Update::new().set("n", 2))
        .await
        .unwrap();
    // A call that waits for that lock, given up after 300 ms.
    let given_up = tokio::time::timeout(
        Duration::from_millis(300),
        coll.update_many(&this, &Update::new().set("n", 3)),
    )
    .await;
    assert!(given_up.is_err(), "the call must still be waiting");
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut left = waiting().await;
    while left > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = waiting().await;
    }
    assert_eq!(left, 0, "the given-up statement still waits on the server");
    tx.rollback().await.unwrap();
}

/// The indexes idempotency depends on are verified at connect and by `check_ready`: missing,
/// not unique, and still being built (`CREATE INDEX CONCURRENTLY` waiting on an old snapshot)
/// are typed errors; building is transient and clears when the build ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_indexes_are_verified() {
    use datastore_api::IndexProblem;
    let (store, url) = fresh(PoolConfig::default()).await;
    store
        .check_ready()
        .await
        .expect("ready on a fresh database");
    let pool = store.pool().clone();
    let exec = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.expect(sql) }
    };
    let problem = |e: datastore_api::Error| e.index_problem().cloned();

    exec("ALTER TABLE health_events DROP CONSTRAINT health_events_idempotency_key_key").await;
    let e = store.check_ready().await.expect_err("missing index");
    assert!(e.is_permanent_backend());
    assert!(matches!(problem(e), Some(IndexProblem::Missing { .. })));
    let Err(e) = PgDataStore::connect_url(&url, PoolConfig::default()).await else {
        panic!("connect accepted a missing index");
    };
    assert!(matches!(problem(e), Some(IndexProblem::Missing { .. })));

    exec("CREATE INDEX health_events_idem_plain ON health_events (idempotency_key)").await;
    let e = store.check_ready().await.expect_err("non-unique index");
    match problem(e) {
        Some(IndexProblem::Mismatch { found, .. }) => {
            assert!(found.contains("not unique"), "{found}")
        }
        other => panic!("a non-unique index gave {other:?}"),
    }
    exec("DROP INDEX health_events_idem_plain").await;

    // A concurrent build waits for this old snapshot before it becomes valid.
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *holder)
        .await
        .expect("isolation");
    sqlx::query("SELECT count(*) FROM maintenance_events")
        .execute(&mut *holder)
        .await
        .expect("snapshot");
    let build = tokio::spawn(exec(
        "CREATE UNIQUE INDEX CONCURRENTLY health_events_idem_new ON health_events (idempotency_key)",
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match store.check_ready().await {
            Err(e) if matches!(e.index_problem(), Some(IndexProblem::Building { .. })) => {
                assert!(e.is_retryable(), "building must be transient: {e}");
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "no Building state seen while a concurrent build waits: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.commit().await.expect("release the snapshot");
    build.await.expect("the build");
    store
        .check_ready()
        .await
        .expect("ready once the build is done");
    PgDataStore::connect_url(&url, PoolConfig::default())
        .await
        .expect("connect once the build is done");
}
