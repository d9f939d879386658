//! The conformance suite as one test per provider and property (see [`main`]).

use std::sync::Arc;

use async_trait::async_trait;
use std::sync::{Mutex, OnceLock};

use conformance::{
    render_table, run_property, Backend, Capabilities, Outcome, PropertyResult, Report, SuiteConfig,
};
use datastore_api::{DataStore, Filter, PoolConfig, Result, StartFrom, Update, WatchOptions};
use datastore_query::Aggregate;
use datastore_testkit::mongo::TestMongo;
use datastore_testkit::postgres::tls::{ServerCert, TlsServer, CERT_USER, SERVER_NAME};
use datastore_testkit::postgres::TestPostgres;

/// Where the PostgreSQL lane runs: the throwaway server set up as production is (TLS only,
/// certificate authentication, the spec's non-superuser role), or an external server named by
/// `DATASTORE_TEST_POSTGRES_URL`.
enum Postgres {
    Certificates(&'static TlsServer),
    External(&'static TestPostgres),
}

impl Postgres {
    fn from_env() -> Postgres {
        if !TestPostgres::may_start_servers() {
            let server = TestPostgres::shared()
                .unwrap_or_else(|e| panic!("PostgreSQL for conformance: {e}"));
            return Postgres::External(server);
        }
        static TLS: std::sync::OnceLock<TlsServer> = std::sync::OnceLock::new();
        Postgres::Certificates(TLS.get_or_init(|| {
            TlsServer::start(ServerCert::Valid)
                .unwrap_or_else(|e| panic!("TLS PostgreSQL for conformance: {e}"))
        }))
    }
}

fn conformance_pool() -> PoolConfig {
    PoolConfig {
        max_connections: 8,
        max_idle_connections: 4,
        ..PoolConfig::default()
    }
}

/// A fresh database on the TLS server, and a store connected to it with `verify-full` and the
/// client certificate, as the certificate user.
async fn certificate_store(server: &TlsServer) -> Result<provider_postgres::PgDataStore> {
    use sqlx::Connection;
    let db = provider_postgres::fresh_test_database(&server.admin_url("postgres")).await?;
    let setup = async {
        let mut conn = sqlx::PgConnection::connect(&server.admin_url(&db)).await?;
        for sql in TlsServer::spec_grants(&db) {
            sqlx::query(&sql).execute(&mut conn).await?;
        }
        conn.close().await
    };
    setup
        .await
        .map_err(|e| datastore_api::Error::permanent(format!("granting {db}: {e}")))?;
    let f = server.files();
    let vars = [
        ("DATASTORE_PROVIDER", "postgresql".to_owned()),
        ("DATASTORE_HOST", SERVER_NAME.to_owned()),
        ("DATASTORE_PORT", server.port().to_string()),
        ("DATASTORE_DATABASE", db),
        ("DATASTORE_USERNAME", CERT_USER.to_owned()),
        ("DATASTORE_SSLMODE", "verify-full".to_owned()),
        ("DATASTORE_SSLCERT", f.client_cert.display().to_string()),
        ("DATASTORE_SSLKEY", f.client_key.display().to_string()),
        ("DATASTORE_SSLROOTCERT", f.ca.display().to_string()),
    ];
    let vars = vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let mut config = datastore_api::DatastoreConfig::from_vars(&vars)?;
    config.pool = conformance_pool();
    provider_postgres::PgDataStore::connect(&config).await
}

#[async_trait]
impl Backend for Postgres {
    fn name(&self) -> String {
        "postgresql".into()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }
    async fn fresh_store(&self) -> Result<Arc<dyn DataStore>> {
        match self {
            Postgres::Certificates(server) => Ok(Arc::new(certificate_store(server).await?)),
            Postgres::External(server) => {
                let db = provider_postgres::fresh_test_database(server.admin_url()).await?;
                let store = provider_postgres::PgDataStore::connect_url(
                    &server.url_for(&db),
                    conformance_pool(),
                )
                .await?;
                Ok(Arc::new(store))
            }
        }
    }
}

struct Mongo {
    server: &'static TestMongo,
    capabilities: Capabilities,
}

#[async_trait]
impl Backend for Mongo {
    fn name(&self) -> String {
        "mongodb".into()
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
    async fn fresh_store(&self) -> Result<Arc<dyn DataStore>> {
        let db = datastore_testkit::mongo::unique_database_name("conf");
        let mut settings = provider_mongo::MongoSettings::from_uri(self.server.uri(), &db);
        // No TTL index: the properties store documents with `createdAt` decades in the past
        // (imports keep theirs), which the server's TTL monitor would delete under them;
        // PostgreSQL has no such deleter. Expiry is NVSentinel's retention, not a promise.
        settings.expiry = None;
        Ok(Arc::new(
            provider_mongo::MongoDataStore::connect_with(&settings).await?,
        ))
    }
}

/// What the MongoDB server can do. Each probe accepts only the server's own "not supported"
/// answer as a gap; any other failure is a provider defect and fails the run.
async fn probe(backend: &Mongo) -> Capabilities {
    let store = backend.fresh_store().await.expect("probe store");
    let coll = store.health_event_collection();
    let change_streams = match coll
        .watch(WatchOptions::new("probe").start(StartFrom::Now))
        .await
    {
        Ok(_) => true,
        Err(e) if e.kind() == datastore_api::ErrorKind::Unsupported => false,
        Err(e) => panic!("probing change streams failed unexpectedly: {e}"),
    };
    // Whether the server finds `document` with `filter` (the one document matching it).
    let finds = |document: serde_json::Value, filter: Filter| async move {
        coll.insert_one(serde_json::from_value(document).expect("doc"))
            .await
            .expect("probe insert");
        coll.count(&filter).await.expect("probe count") == 1
    };
    // Equality across number types: {n: 1} must match Eq(n, 1.0).
    let numeric_equality = finds(serde_json::json!({"n": 1}), Filter::eq("n", 1.0)).await;
    // MongoDB's path resolution: `q.0` on `[{"0": 7}]` reaches the element's field "0".
    let index_fields_in_arrays =
        finds(serde_json::json!({"q": [{"0": 7}]}), Filter::eq("q.0", 7)).await;
    // After the insert, so the update has a document to change and reaches the server.
    let push_update = match coll
        .update_many(&Filter::All, &Update::new().push("probe", 1))
        .await
    {
        Ok(_) => true,
        // The update is valid by the API's rules: a server that refuses it as invalid input
        // lacks the operator (jongodb: BadValue, code 14).
        Err(e) if e.kind() == datastore_api::ErrorKind::InvalidInput => false,
        Err(e) => panic!("probing $push failed unexpectedly: {e}"),
    };
    let transactions = match store.begin().await {
        Ok(tx) => tx.commit().await.is_ok(),
        Err(e) if e.kind() == datastore_api::ErrorKind::Configuration => false,
        Err(e) => panic!("probing transactions failed unexpectedly: {e}"),
    };
    let isolated_transactions = transactions && isolates(store.as_ref()).await;
    // MongoDB's expression paths: "$probe_e.a" over [{a: 1}] is [1], an array, above 0.
    coll.insert_one(
        serde_json::from_value(serde_json::json!({"probe_e": [{"a": 1}]})).expect("doc"),
    )
    .await
    .expect("probe insert");
    let expression_array_paths = coll
        .count(&Filter::expr_cmp("probe_e.a", datastore_api::CmpOp::Gt, 0))
        .await
        .is_ok_and(|n| n == 1);
    // MongoDB's `$count` over nothing gives nothing.
    let empty_count = datastore_query::Pipeline::parse(&serde_json::json!([
        {"$match": {"probe-absent": "x"}}, {"$count": "c"}
    ]))
    .expect("probe pipeline");
    let count_of_nothing_is_empty = match coll.aggregate(&empty_count).await {
        Ok(out) => out.is_empty(),
        Err(e) if e.kind() == datastore_api::ErrorKind::Unsupported => true,
        Err(e) => panic!("probing $count failed unexpectedly: {e}"),
    };
    // Every stage, accumulator and operator the random pipelines use, over one document.
    let every = datastore_query::Pipeline::parse(&serde_json::json!([
        {"$match": {"$expr": {"$lt": [{"$max": [{"$add": [{"$ifNull": ["$v", 0]}, 1]}, {"$subtract": [1, 2]}]}, 6]}}},
        {"$addFields": {"e": {"$cond": [{"$eq": ["$v", 1]}, "yes", "no"]}}},
        {"$unwind": {"path": "$tags", "preserveNullAndEmptyArrays": true}},
        {"$project": {"node": 1, "v": 1, "tags": 1, "total": {"$add": [{"$ifNull": ["$v", 0]}, 1]}}},
        {"$group": {"_id": "$node", "n": {"$sum": 1}, "hi": {"$max": "$v"}, "lo": {"$min": "$v"},
                    "set": {"$addToSet": "$tags"}}},
        {"$project": {"set": 0}},
    ]))
    .expect("probe pipeline");
    let aggregation = match coll.aggregate(&every).await {
        Ok(_) => true,
        Err(e) if e.kind() == datastore_api::ErrorKind::Unsupported => false,
        Err(e) => panic!("probing aggregation failed unexpectedly: {e}"),
    };
    // MongoDB's optimizer: the `$match` runs first, so `$toLong` never sees the text.
    coll.insert_one(serde_json::from_value(serde_json::json!({"probe_m": "text"})).expect("doc"))
        .await
        .expect("probe insert");
    let moved = datastore_query::Pipeline::parse(&serde_json::json!([
        {"$match": {"probe_m": "text"}},
        {"$addFields": {"probe_n": {"$toLong": "$probe_m"}}},
        {"$match": {"probe-absent": "x"}},
    ]))
    .expect("probe pipeline");
    let match_moves_before_projection = coll.aggregate(&moved).await.is_ok();
    store.close().await;
    Capabilities {
        transactions,
        isolated_transactions,
        change_streams,
        push_update,
        numeric_equality,
        index_fields_in_arrays,
        // MongoDB's change history is the oplog, trimmed by the server.
        provider_retention: false,
        count_of_nothing_is_empty,
        aggregation,
        expression_array_paths,
        match_moves_before_projection,
    }
}

/// Whether two open transactions that both increment one document cannot both commit: the
/// second waits (more than 2 s counts as waiting) or fails with a retryable conflict. A server
/// where both commit and the document shows one increment loses committed writes.
async fn isolates(store: &dyn DataStore) -> bool {
    use datastore_api::value::ID_FIELD;
    let coll = store.health_event_collection();
    let doc = serde_json::from_value(serde_json::json!({"isolation": 0})).expect("doc");
    let id = coll.insert_one(doc).await.expect("probe insert").id;
    let filter = Filter::eq(ID_FIELD, id.as_str());
    let inc = Update::new().inc("isolation", 1);
    let first = store.begin().await.expect("probe begin");
    first
        .health_event_collection()
        .update_many(&filter, &inc)
        .await
        .expect("probe increment");
    let second = store.begin().await.expect("probe begin");
    let raced = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        second.health_event_collection().update_many(&filter, &inc),
    )
    .await;
    let mut committed = u64::from(first.commit().await.is_ok());
    match raced {
        Err(_) => return true,
        Ok(Err(e)) if e.is_retryable() => {}
        Ok(Err(e)) => panic!("probing isolation failed unexpectedly: {e}"),
        Ok(Ok(_)) => committed += u64::from(second.commit().await.is_ok()),
    }
    let docs = coll
        .find(&filter, &datastore_api::FindOptions::default())
        .await
        .expect("probe find");
    let value = docs.first().and_then(|d| d["isolation"].as_u64());
    value == Some(committed)
}

/// The backend of a provider, opened (server started, capabilities probed) by the first test
/// that needs it.
fn backend(name: &str, rt: &tokio::runtime::Runtime) -> Arc<dyn Backend> {
    match name {
        "postgresql" => {
            let backend = Postgres::from_env();
            if matches!(backend, Postgres::Certificates(_)) {
                eprintln!("conformance: PostgreSQL lane: TLS verify-full, certificate authentication as the non-superuser role {CERT_USER:?}");
            }
            Arc::new(backend)
        }
        "mongodb" => {
            let server =
                TestMongo::shared().unwrap_or_else(|e| panic!("MongoDB for conformance: {e}"));
            eprintln!("conformance: MongoDB lane: {}", server.lane());
            let mut backend = Mongo {
                server,
                capabilities: Capabilities::ALL,
            };
            backend.capabilities = rt.block_on(probe(&backend));
            eprintln!(
                "conformance: MongoDB server capabilities: {:?}",
                backend.capabilities
            );
            Arc::new(backend)
        }
        other => panic!("CONFORMANCE_PROVIDERS: unknown provider {other:?}"),
    }
}

/// One test per provider named by `CONFORMANCE_PROVIDERS` (`postgresql`, `mongodb`, `all`;
/// default `postgresql`) and property, named `<provider>::<property>`. A requested provider
/// that cannot be reached fails its tests; it is never skipped. A property the server lacks a
/// capability for passes as "not run" (see the table printed at the end).
fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let wanted = std::env::var("CONFORMANCE_PROVIDERS").unwrap_or_else(|_| "postgresql".into());
    let wanted: Vec<String> = match wanted.as_str() {
        "all" => vec!["postgresql".into(), "mongodb".into()],
        other => other.split(',').map(|p| p.trim().to_owned()).collect(),
    };
    let rt = Arc::new(tokio::runtime::Runtime::new().expect("tokio runtime"));
    let config = SuiteConfig::from_env();
    let results: Arc<Mutex<Vec<(usize, Report)>>> = Arc::default();
    let mut trials = Vec::new();
    for (index, provider) in wanted.iter().enumerate() {
        let opened: Arc<OnceLock<Arc<dyn Backend>>> = Arc::default();
        for property in conformance::properties::ALL {
            let (rt, opened, results) =
                (Arc::clone(&rt), Arc::clone(&opened), Arc::clone(&results));
            let provider = provider.clone();
            let name = format!("{provider}::{}", property.name);
            trials.push(libtest_mimic::Trial::test(name, move || {
                let backend = opened.get_or_init(|| backend(&provider, &rt));
                let result = run_property(backend.as_ref(), property, &rt, config);
                let outcome = result.outcome.clone();
                record(&results, index, &provider, result);
                match outcome {
                    Outcome::Failed(message) => Err(message.into()),
                    Outcome::NotRun(why) => {
                        eprintln!("{provider}::{}: not run: {why}", property.name);
                        Ok(())
                    }
                    Outcome::Passed => Ok(()),
                }
            }));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let mut reports = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    if !reports.is_empty() {
        reports.sort_by_key(|(index, _)| *index);
        let reports: Vec<Report> = reports.into_iter().map(|(_, r)| r).collect();
        println!("\n{}", render_table(&reports));
    }
    conclusion.exit_code()
}

/// Adds a property's result to its provider's report (in property order).
fn record(
    results: &Mutex<Vec<(usize, Report)>>,
    index: usize,
    provider: &str,
    result: PropertyResult,
) {
    let mut reports = results.lock().unwrap_or_else(|e| e.into_inner());
    match reports.iter_mut().find(|(i, _)| *i == index) {
        Some((_, report)) => report.results.push(result),
        None => reports.push((
            index,
            Report {
                backend: provider.to_owned(),
                results: vec![result],
            },
        )),
    }
}
