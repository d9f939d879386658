//! Imports of `mongoexport` files on PostgreSQL and the MongoDB stand-in: kept ids and times,
//! rejections with their positions, a re-run that imports nothing twice, and `--verify`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use datastore::value::ID_FIELD;
use datastore::{Filter, FindOptions, StartFrom, Update, WatchOptions};
use datastore_tools::import::Position;
use futures::StreamExt;

use super::*;

const FILE_LINES: &str = r#"{"_id":{"$oid":"6b105a82bd0eee37b2e88620"},"createdAt":{"$date":{"$numberLong":"1767323045678"}},"healthevent":{"nodename":"node-1","isfatal":true,"generatedtimestamp":{"seconds":{"$numberLong":"1767323045"},"nanos":{"$numberInt":"5"}}}}
{"_id":{"$oid":"6b105a82bd0eee37b2e88621"},"createdAt":{"$date":"2026-01-02T03:04:06.000Z"},"healthevent":{"nodename":"node-2","isfatal":false,"ratio":0.25}}

not json at all
{"_id":{"$oid":"6b105a82bd0eee37b2e88622"},"createdAt":{"$date":"2026-01-02T03:04:07Z"},"healthevent":{"score":{"$numberDouble":"NaN"}}}
{"_id":{"$oid":"6b105a82bd0eee37b2e88623"},"healthevent":{"nodename":"node-3"}}
{"_id":{"$oid":"6b105a82bd0eee37b2e88624"},"createdAt":{"$date":"2026-01-02T03:04:08.5Z"},"healthevent":{"nodename":"node-4","entitiesimpacted":[{"entitytype":"GPU","entityvalue":"3"}]}}
"#;

fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("import-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn args(file: &Path, verify: bool) -> ImportArgs {
    ImportArgs {
        file: file.to_owned(),
        collection: ImportTarget::HealthEvents,
        batch: 2,
        verify,
        json: false,
    }
}

async fn exercise(store: &dyn DataStore, path: &Path) {
    let collection = store.health_event_collection();
    let mut stream = collection
        .watch(WatchOptions::new("after-migration").start(StartFrom::Now))
        .await
        .expect("watch");
    let first = import_on(store, &args(path, false), false)
        .await
        .expect("import");
    assert_eq!(
        (first.read, first.inserted, first.present),
        (6, 3, 0),
        "{first:?}"
    );
    let at: Vec<String> = first
        .rejected
        .iter()
        .map(|(at, why)| format!("{at}: {why}"))
        .collect();
    assert_eq!(first.rejected_count, 3, "{at:?}");
    assert!(
        at[0].starts_with("line 4: not JSON") || at[0].starts_with("document"),
        "{at:?}"
    );
    assert!(
        at.iter()
            .any(|r| r.contains("healthevent.score: $numberDouble NaN")),
        "{at:?}"
    );
    assert!(
        at.iter().any(|r| r.contains("createdAt: missing")),
        "{at:?}"
    );

    // Kept as exported: the id, createdAt to the millisecond, the numbers.
    let stored = collection
        .find(
            &Filter::eq(ID_FIELD, "6b105a82bd0eee37b2e88620"),
            &FindOptions::default(),
        )
        .await
        .expect("find");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["createdAt"],
        json!({"$date": "2026-01-02T03:04:05.678Z"})
    );
    assert_eq!(
        stored[0]["healthevent"]["generatedtimestamp"]["seconds"],
        json!(1767323045_i64)
    );
    // Each imported document is an insert to change streams.
    let change = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a change within 30 s")
        .expect("a change")
        .expect("no error");
    assert_eq!(change.operation.as_str(), "insert");
    drop(stream);

    // A re-run imports nothing twice.
    let again = import_on(store, &args(path, false), false)
        .await
        .expect("import again");
    assert_eq!((again.inserted, again.present), (0, 3), "{again:?}");

    // Verify: identical, then one document changed in the store.
    let same = import_on(store, &args(path, true), false)
        .await
        .expect("verify");
    assert_eq!(
        (
            same.identical,
            same.missing.len(),
            same.different.len(),
            same.extra_in_store
        ),
        (3, 0, 0, 0),
        "{same:?}"
    );
    collection
        .update_one(
            &Filter::eq(ID_FIELD, "6b105a82bd0eee37b2e88621"),
            &Update::new().set("healthevent.isfatal", true),
        )
        .await
        .expect("update");
    let doc = serde_json::from_value(json!({"unrelated": 1})).expect("doc");
    collection.insert_one(doc).await.expect("insert");
    let changed = import_on(store, &args(path, true), false)
        .await
        .expect("verify");
    assert_eq!(
        changed.different,
        ["6b105a82bd0eee37b2e88621"],
        "{changed:?}"
    );
    assert_eq!(
        (changed.identical, changed.extra_in_store),
        (2, 1),
        "{changed:?}"
    );
    assert!(describe(&changed, &args(path, true)).contains("stored with other contents"));

    // A plain re-run reports the changed document as a conflict, with its line and field.
    let conflicting = import_on(store, &args(path, false), false)
        .await
        .expect("import again");
    assert_eq!(
        (conflicting.present, conflicting.conflict_count),
        (2, 1),
        "{conflicting:?}"
    );
    let (at, why) = &conflicting.conflicts[0];
    assert_eq!(*at, Position::Line(2));
    assert!(
        why.contains("6b105a82bd0eee37b2e88621") && why.contains("healthevent.isfatal"),
        "{why}"
    );
}

#[test]
fn import_json_lines_into_postgresql() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = datastore_workload::embedded::start_embedded().expect("PostgreSQL");
    let path = file("lines.json", FILE_LINES);
    rt.block_on(async {
        let (store, _) = datastore_workload::embedded::connect_embedded(&server)
            .await
            .expect("store");
        exercise(&store, &path).await;
        store.close().await;
    });
}

#[test]
fn import_a_json_array_into_mongodb() {
    // The same documents as one array; the line that is not JSON cannot be in an array.
    let docs: Vec<&str> = FILE_LINES.lines().filter(|l| l.starts_with('{')).collect();
    let mut text = format!("[{}]", docs.join(",\n"));
    text.push('\n');
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server =
        datastore_workload::embedded::start_mongo_stand_in().expect("the MongoDB stand-in");
    let path = file("array.json", &text);
    rt.block_on(async {
        let store = datastore_workload::embedded::connect_mongo_stand_in(&server)
            .await
            .expect("store");
        let collection = store.health_event_collection();
        let first = import_on(store.as_ref(), &args(&path, false), false)
            .await
            .expect("import");
        assert_eq!(
            (first.read, first.inserted, first.rejected_count),
            (5, 3, 2),
            "{first:?}"
        );
        assert!(first
            .rejected
            .iter()
            .all(|(at, _)| matches!(at, Position::Element(_))));
        let again = import_on(store.as_ref(), &args(&path, false), false)
            .await
            .expect("again");
        assert_eq!((again.inserted, again.present), (0, 3), "{again:?}");
        let same = import_on(store.as_ref(), &args(&path, true), false)
            .await
            .expect("verify");
        assert_eq!((same.identical, same.different.len()), (3, 0), "{same:?}");
        assert_eq!(collection.count(&Filter::All).await.expect("count"), 3);
        store.close().await;
    });
}

#[test]
fn resume_tokens_are_reported_not_imported() {
    let path = file(
        "tokens.json",
        "{\"_id\":{\"$oid\":\"6b105a82bd0eee37b2e88620\"},\"clientName\":\"fault-quarantine\",\"resumeToken\":{\"_data\":\"8263\"}}\n",
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let out = rt.block_on(import::resume_tokens(&path)).expect("report");
    assert!(
        out.contains("fault-quarantine") && out.contains("nothing imported"),
        "{out}"
    );
}

/// A file whose second of three documents is over MongoDB's 16 MiB limit.
fn with_a_huge_document() -> PathBuf {
    let doc = |id: &str, body: &str| {
        format!(
            "{{\"_id\":{{\"$oid\":\"{id}\"}},\"createdAt\":{{\"$date\":\"2026-01-02T03:04:05Z\"}},\"healthevent\":{{\"message\":\"{body}\"}}}}\n"
        )
    };
    let text = [
        doc("6b105a82bd0eee37b2e88630", "small"),
        doc("6b105a82bd0eee37b2e88631", &"x".repeat(17 * 1024 * 1024)),
        doc("6b105a82bd0eee37b2e88632", "small"),
    ]
    .concat();
    file("huge.json", &text)
}

async fn huge_document_refused_alone(store: &dyn DataStore, path: &Path) {
    let mut a = args(path, false);
    a.batch = 10;
    let done = import_on(store, &a, false).await.expect("import");
    assert_eq!((done.inserted, done.rejected_count), (2, 1), "{done:?}");
    assert_eq!(done.rejected[0].0, Position::Line(2));
    assert!(done.rejected[0].1.contains("16 MiB"), "{:?}", done.rejected);
}

#[test]
fn a_document_over_16_mib_is_refused_alone_on_postgresql() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = datastore_workload::embedded::start_embedded().expect("PostgreSQL");
    let path = with_a_huge_document();
    rt.block_on(async {
        let (store, _) = datastore_workload::embedded::connect_embedded(&server)
            .await
            .expect("store");
        huge_document_refused_alone(&store, &path).await;
        store.close().await;
    });
}

#[test]
fn a_document_over_16_mib_is_refused_alone_on_mongodb() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server =
        datastore_workload::embedded::start_mongo_stand_in().expect("the MongoDB stand-in");
    let path = with_a_huge_document();
    rt.block_on(async {
        let store = datastore_workload::embedded::connect_mongo_stand_in(&server)
            .await
            .expect("store");
        huge_document_refused_alone(store.as_ref(), &path).await;
        store.close().await;
    });
}
