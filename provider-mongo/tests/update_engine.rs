//! The API's update rules (`datastore_api::ValidUpdate::apply`, which the PostgreSQL provider
//! runs and the MongoDB provider uses to decide what changes) checked against MongoDB's own
//! update engine: random documents and `Set/Unset/Inc/Push/CurrentDate` updates, applied on
//! the server with the native `$set/$unset/$inc/$push/$currentDate` operators and in Rust,
//! must give the same document, or both an error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use chrono::{DateTime, Utc};
use conformance::gen;
use datastore_api::value::equivalent_documents;
use datastore_api::{Document, TimeFormat, Update, UpdateOp, Value};
use datastore_testkit::mongo::{unique_database_name, StandIn, TestMongo};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document as BsonDocument};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Paths the updates write (as the conformance suite's, plus a dotted one under a new parent).
const PATHS: &[&str] = &["a", "b", "c", "a.a", "a.b", "b.a", "a.a.b", "d", "d.e"];

fn bson_of(value: &Value) -> Bson {
    Bson::try_from(value.clone()).expect("extended JSON converts to BSON")
}

/// MongoDB's update document for `update`.
fn native(update: &Update) -> BsonDocument {
    let mut groups = BsonDocument::new();
    for op in update.ops() {
        let (operator, path, value) = match op {
            UpdateOp::Set(p, v) => ("$set", p, bson_of(v)),
            UpdateOp::Unset(p) => ("$unset", p, Bson::String(String::new())),
            UpdateOp::Inc(p, v) => ("$inc", p, bson_of(v)),
            UpdateOp::Push(p, v) => ("$push", p, bson_of(v)),
            UpdateOp::CurrentDate(p, _) => {
                ("$currentDate", p, Bson::from(doc! { "$type": "date" }))
            }
            other => panic!("an update operation this test does not know: {other:?}"),
        };
        if !groups.contains_key(operator) {
            groups.insert(operator, BsonDocument::new());
        }
        if let Ok(group) = groups.get_document_mut(operator) {
            group.insert(path.as_str(), value);
        }
    }
    groups
}

/// The document as the API sees it (without `_id`).
fn api_document(mut d: BsonDocument) -> Document {
    d.remove("_id");
    let mut v = Bson::Document(d).into_relaxed_extjson();
    datastore_api::value::canonicalize(&mut v).expect("the server's document is canonical");
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

/// The time MongoDB's `$currentDate` wrote, if the update has one.
fn written_time(update: &Update, after: &Document) -> Option<DateTime<Utc>> {
    update.ops().iter().find_map(|op| match op {
        UpdateOp::CurrentDate(p, _) => {
            let v = p
                .split('.')
                .try_fold(&Value::Object(after.clone()), |cur, s| cur.get(s))
                .cloned()?;
            datastore_api::value::as_date(&v)
        }
        _ => None,
    })
}

fn update_strategy() -> impl Strategy<Value = Update> {
    (
        gen::update(gen::Vocabulary::ALL),
        prop::option::of(prop::sample::select(PATHS)),
    )
        .prop_map(|(u, date)| match date {
            Some(p) => u.op(UpdateOp::CurrentDate(p.to_owned(), TimeFormat::Date)),
            None => u,
        })
}

#[test]
fn updates_match_mongodb_update_operators() {
    let server = TestMongo::shared().unwrap_or_else(|e| panic!("MongoDB for this test: {e}"));
    if server.stand_in() == Some(StandIn::Jongodb) {
        eprintln!("NOTE: skipped: jongodb has no $push and compares numbers by type");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(mongodb::Client::with_uri_str(server.uri()))
        .expect("client");
    let coll = client
        .database(&unique_database_name("engine"))
        .collection::<BsonDocument>("docs");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &(gen::document(gen::Vocabulary::ALL), update_strategy()),
        |(document, update)| {
            let Ok(valid) = update.validate() else {
                return Ok(()); // refused by the API before any server sees it
            };
            let id = ObjectId::new();
            let mut stored = match bson_of(&Value::Object(document.clone())) {
                Bson::Document(d) => d,
                other => panic!("not a document: {other}"),
            };
            stored.insert("_id", id);
            let theirs = rt.block_on(async {
                coll.insert_one(stored).await.expect("insert");
                match coll.update_one(doc! { "_id": id }, native(&update)).await {
                    Ok(_) => {
                        let d = coll.find_one(doc! { "_id": id }).await.expect("find");
                        Ok(api_document(d.expect("the document is there")))
                    }
                    Err(e) => Err(e.to_string()),
                }
            });
            let now = theirs
                .as_ref()
                .ok()
                .and_then(|d| written_time(&update, d))
                .unwrap_or_else(Utc::now);
            let mut ours = document.clone();
            let ours = valid.apply(&mut ours, now).map(|_| ours);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    prop_assert!(
                        equivalent_documents(a, b),
                        "documents differ:\n  ours   {:?}\n  server {:?}",
                        a,
                        b
                    );
                }
                (Err(_), Err(_)) => {}
                _ => prop_assert!(
                    false,
                    "one side failed:\n  ours   {:?}\n  server {:?}",
                    ours,
                    theirs
                ),
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
