//! Provider-specific checks against a real server (the lane `datastore-testkit` picks: a replica
//! set from `DATASTORE_TEST_MONGODB_URI`, Docker's `mongo:7`, or a stand-in server). The
//! behaviour every provider shares is pinned by the conformance suite; these tests pin what is
//! MongoDB's own: the stored BSON shape, the indexes, error mapping and connection failures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use std::time::{Duration, Instant};

use datastore_api::{DataStore, ErrorKind, Filter, FindOptions, KeyedDocument, Update, Value};
use datastore_testkit::mongo::{unique_database_name, TestMongo};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document as BsonDocument};
use provider_mongo::{MongoDataStore, MongoSettings};
use serde_json::json;

fn server() -> &'static TestMongo {
    TestMongo::shared().unwrap_or_else(|e| panic!("MongoDB for provider tests: {e}"))
}

async fn fresh() -> (MongoDataStore, MongoSettings) {
    let settings = MongoSettings::from_uri(server().uri(), &unique_database_name("prov"));
    let store = MongoDataStore::connect_with(&settings)
        .await
        .expect("connect");
    (store, settings)
}

fn doc_of(v: Value) -> datastore_api::Document {
    match v {
        Value::Object(o) => o,
        _ => unreachable!(),
    }
}

async fn raw(store: &MongoDataStore, collection: &str) -> Vec<BsonDocument> {
    store
        .database()
        .collection::<BsonDocument>(collection)
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect")
}

#[tokio::test]
async fn stores_nvsentinel_bson_shapes() {
    let (store, _) = fresh().await;
    let hc = store.health_event_collection();
    let ins = hc
        .insert_one(doc_of(json!({
            "healthevent": {"nodename": "n1", "generatedtimestamp": {"seconds": 5, "nanos": 0}},
            "when": {"$date": "2024-01-02T03:04:05.678Z"},
            "ratio": 0.5
        })))
        .await
        .unwrap();
    let docs = raw(&store, "HealthEvents").await;
    assert_eq!(docs.len(), 1);
    let d = &docs[0];
    assert_eq!(
        d.get_object_id("_id").unwrap().to_hex(),
        ins.id.as_str(),
        "_id is an ObjectId"
    );
    assert_eq!(
        d.get_datetime("createdAt").unwrap().timestamp_millis(),
        ins.created_at.timestamp_millis(),
        "createdAt is a BSON date"
    );
    assert!(matches!(d.get("when"), Some(Bson::DateTime(_))));
    let he = d.get_document("healthevent").unwrap();
    assert!(matches!(
        he.get_document("generatedtimestamp")
            .unwrap()
            .get("seconds"),
        Some(Bson::Int64(5))
    ));
    assert!(matches!(d.get("ratio"), Some(Bson::Double(_))));

    // The idempotency key is stored (for its unique index) but never returned.
    hc.insert_idempotent(vec![KeyedDocument {
        key: "k1".into(),
        document: doc_of(json!({"x": 1})),
    }])
    .await
    .unwrap();
    let found = hc
        .find(&Filter::eq("x", 1), &FindOptions::default())
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0]
        .keys()
        .all(|k| k == "x" || k == "_id" || k == "createdAt"));
    store.close().await;
}

#[tokio::test]
async fn creates_indexes_idempotently_with_the_ttl() {
    let (store, settings) = fresh().await;
    // A second connect re-issues createIndexes with the same definitions: a no-op.
    let again = MongoDataStore::connect_with(&settings).await.unwrap();
    let names: Vec<BsonDocument> = store
        .database()
        .collection::<BsonDocument>("HealthEvents")
        .list_indexes()
        .await
        .unwrap()
        .map_ok(|m| {
            let mut d = doc! { "keys": m.keys };
            if let Some(o) = m.options {
                if let Some(n) = o.name {
                    d.insert("name", n);
                }
                if let Some(t) = o.expire_after {
                    d.insert("ttl", t.as_secs() as i64);
                }
                if let Some(u) = o.unique {
                    d.insert("unique", u);
                }
            }
            d
        })
        .try_collect()
        .await
        .unwrap();
    let ttl = names
        .iter()
        .find(|d| d.get_str("name") == Ok("createdAt_ttl"))
        .unwrap_or_else(|| panic!("no TTL index in {names:?}"));
    assert_eq!(ttl.get_i64("ttl"), Ok(2_592_000));
    assert!(names
        .iter()
        .any(|d| d.get_str("name") == Ok("idempotency_key_unique")
            && d.get_bool("unique") == Ok(true)));
    again.close().await;
    store.close().await;
}

#[tokio::test]
async fn errors_are_typed_and_change_nothing() {
    let (store, _) = fresh().await;
    let hc = store.health_event_collection();
    let a = hc
        .insert_one(doc_of(json!({"s": "text", "n": 1})))
        .await
        .unwrap();

    // Duplicate id.
    let dup = hc
        .insert_one(doc_of(json!({"_id": a.id.as_str()})))
        .await
        .unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::Duplicate, "{dup}");

    // $inc on a string: the server refuses; nothing changes.
    let bad = hc
        .update_many(&Filter::All, &Update::new().inc("s", 1).set("n", 2))
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");
    let now = hc
        .find(&Filter::All, &FindOptions::default())
        .await
        .unwrap();
    assert_eq!(now[0]["n"], json!(1));

    // insert_many is all or nothing: the second document repeats the first's id.
    let id = "65a1b2c3d4e5f60718293a4b";
    let err = hc
        .insert_many(vec![doc_of(json!({"_id": id})), doc_of(json!({"_id": id}))])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Duplicate, "{err}");
    assert_eq!(hc.count(&Filter::All).await.unwrap(), 1);
    store.close().await;
}

#[tokio::test]
async fn unreachable_server_is_transient_and_hides_the_password() {
    // Nothing listens on port 9 of loopback.
    let mut settings = MongoSettings::from_uri(
        "mongodb://user:pa55word@127.0.0.1:9/?directConnection=true",
        "db",
    );
    settings.server_selection_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = match MongoDataStore::connect_with(&settings).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    assert!(err.is_retryable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!format!("{err} {err:?}").contains("pa55word"), "{err:?}");
}

#[tokio::test]
async fn a_closed_store_fails_without_panicking() {
    let (store, _) = fresh().await;
    store.close().await;
    let err = store
        .health_event_collection()
        .count(&Filter::All)
        .await
        .unwrap_err();
    assert!(err.kind() == ErrorKind::Backend, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_transactions_leave_no_session_behind() {
    let (store, _) = fresh().await;
    let coll = store.health_event_collection();
    // Callers that give up (a timeout drops the future) mid-transaction, at varying points.
    for i in 0..30u64 {
        let docs: Vec<_> = (0..100)
            .map(|j| doc_of(json!({ "i": i, "j": j })))
            .collect();
        let _ = tokio::time::timeout(Duration::from_millis(1 + i), coll.insert_many(docs)).await;
    }
    // The given-up calls finish in the background (commit or abort). Let them: the stand-in does
    // not isolate concurrent transactions, so an abort there can undo another's insert.
    let mut last = u64::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = coll.count(&Filter::exists("i", true)).await.unwrap();
        if now == last {
            break;
        }
        last = now;
    }
    // Every later call still works: no session is reused while its transaction is open.
    for k in 0..30 {
        coll.insert_many(vec![doc_of(json!({ "k": k })), doc_of(json!({ "k": k }))])
            .await
            .unwrap_or_else(|e| panic!("insert_many {k} after cancellations: {e}"));
    }
    assert_eq!(coll.count(&Filter::exists("k", true)).await.unwrap(), 60);
}

/// The indexes idempotency depends on are verified by `check_ready` and at connect: missing
/// and not unique are typed errors; a connect either creates the right index or refuses.
#[tokio::test]
async fn idempotency_indexes_are_verified() {
    use datastore_api::IndexProblem;
    let (store, settings) = fresh().await;
    store
        .check_ready()
        .await
        .expect("ready on a fresh database");
    let health = store.database().collection::<BsonDocument>("HealthEvents");
    health
        .drop_index("idempotency_key_unique")
        .await
        .expect("drop the index");
    let e = store.check_ready().await.expect_err("missing index");
    assert!(e.is_permanent_backend());
    assert!(
        matches!(e.index_problem(), Some(IndexProblem::Missing { .. })),
        "{e}"
    );

    health
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "_idempotencyKey": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("idem_plain".to_owned())
                        .build(),
                )
                .build(),
        )
        .await
        .expect("a plain index");
    let e = store.check_ready().await.expect_err("non-unique index");
    match e.index_problem() {
        Some(IndexProblem::Mismatch { found, .. }) => {
            assert!(found.contains("not unique"), "{found}")
        }
        other => panic!("a non-unique index gave {other:?}"),
    }
    // Connecting again creates the right index beside it (servers that allow two indexes of
    // one key) or refuses with the mismatch; it never connects without a working index.
    match MongoDataStore::connect_with(&settings).await {
        Ok(again) => again
            .check_ready()
            .await
            .expect("the connect made the index"),
        Err(e) => assert!(
            matches!(e.index_problem(), Some(IndexProblem::Mismatch { .. })),
            "{e}"
        ),
    }
}
