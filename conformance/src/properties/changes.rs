//! Change-stream properties: each consumer's delivered sequence equals the committed history,
//! filtered, in commit order, with no gap and no duplicate, across restarts from checkpoints,
//! concurrent writers and transactions that commit late.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datastore_api::{
    ChangeEvent, ChangeStream, DocumentId, Filter, OperationType, ResumeToken, StartFrom, Update,
    WatchOptions,
};
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::json;

use super::{check_cases, ok, op, reset, run_op, shrink_iters};
use crate::gen;
use crate::model::{matches, ExpectedChange, Model};
use crate::Ctx;

const POLL: Duration = Duration::from_millis(20);

pub(super) fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(super) fn options(consumer: &str, filter: Filter, start: StartFrom) -> WatchOptions {
    let mut o = WatchOptions::new(consumer).filter(filter).start(start);
    o.poll_interval = POLL;
    o.batch_size = 7; // small, so batches split inside ticks
    o
}

/// Prefixes every path of `f` (a document filter becomes a filter on `fullDocument`).
fn prefixed(mut f: Filter, prefix: &str) -> Filter {
    prefix_paths(&mut f, prefix);
    f
}

fn prefix_paths(f: &mut Filter, prefix: &str) {
    match f {
        Filter::All => {}
        Filter::Eq(a, _)
        | Filter::Ne(a, _)
        | Filter::Gt(a, _)
        | Filter::Gte(a, _)
        | Filter::Lt(a, _)
        | Filter::Lte(a, _)
        | Filter::In(a, _)
        | Filter::Nin(a, _)
        | Filter::Exists(a, _)
        | Filter::ExprCmp(a, _, _)
        | Filter::EqValue(a, _) => a.insert_str(0, prefix),
        Filter::Not(inner) => prefix_paths(inner, prefix),
        Filter::And(v) | Filter::Or(v) => v.iter_mut().for_each(|f| prefix_paths(f, prefix)),
    }
}

fn change_filter(vocab: gen::Vocabulary) -> impl Strategy<Value = Filter> {
    let op = prop::sample::select(vec!["insert", "update", "delete"])
        .prop_map(|o| Filter::eq("operationType", o));
    prop_oneof![
        1 => Just(Filter::All),
        2 => op.clone(),
        3 => gen::filter(vocab).prop_map(|f| prefixed(f, "fullDocument.")),
        2 => prop::sample::select(vec!["a", "b", "a.a", "d", "c"]).prop_map(|p| Filter::eq("updateDescription.updatedFields", p)),
        2 => (op, gen::filter(vocab)).prop_map(|(o, f)| o.or(prefixed(f, "fullDocument."))),
    ]
}

/// Reads exactly `n` events (or fails after `deadline`), then checks nothing more arrives soon.
pub(super) async fn read_exactly(
    stream: &mut ChangeStream,
    n: usize,
) -> std::result::Result<Vec<ChangeEvent>, String> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(format!(
                    "only {} of {n} expected changes arrived in 10 s",
                    out.len()
                ))
            }
            Ok(None) => return Err("the change stream ended".into()),
            Ok(Some(Err(e))) => return Err(format!("the change stream failed: {e}")),
            Ok(Some(Ok(e))) => out.push(e),
        }
    }
    if let Ok(Some(extra)) = tokio::time::timeout(POLL * 8, stream.next()).await {
        return Err(format!("an unexpected extra change arrived: {extra:?}"));
    }
    Ok(out)
}

fn compare(got: &[ChangeEvent], want: &[&ExpectedChange]) -> std::result::Result<(), String> {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !w.is(g) {
            return Err(format!("change {i}: delivered {g:?}\n    expected {w:?}"));
        }
    }
    if let Some(pair) = got.windows(2).find(|w| w[0].token >= w[1].token) {
        return Err(format!(
            "tokens not increasing: {:?} then {:?}",
            pair[0].token, pair[1].token
        ));
    }
    Ok(())
}

/// Two consumers (all changes, and a random filter) watching random operation sequences receive
/// exactly the model's history; the filtered consumer, restarted from a checkpoint at a random
/// point, receives exactly the rest.
pub(super) fn change_streams_match_committed_history(
    ctx: &Ctx<'_>,
) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    let strategy = (
        prop::collection::vec(op(ctx.capabilities), 1..12),
        change_filter(ctx.capabilities.into()),
        any::<prop::sample::Index>(),
    );
    // Each case waits a few poll intervals to prove no extra change arrives: a quarter of the budget.
    check_cases(
        (ctx.cases / 4).max(8),
        shrink_iters().min(32),
        strategy,
        |(ops, filter, stop)| {
            ctx.rt.block_on(async {
                reset(coll).await?;
                let all_name = unique("all");
                let filtered_name = unique("filtered");
                let mut all = ok(
                    coll.watch(options(&all_name, Filter::All, StartFrom::Now))
                        .await,
                    "watch",
                )?;
                let mut filtered = ok(
                    coll.watch(options(&filtered_name, filter.clone(), StartFrom::Now))
                        .await,
                    "watch",
                )?;
                let mut model = Model::default();
                let mut keys = HashMap::new();
                for (step, o) in ops.into_iter().enumerate() {
                    let at = format!("step {step} ({o:?})");
                    run_op(coll, &mut model, &mut keys, o)
                        .await
                        .map_err(|m| TestCaseError::fail(format!("{at}: {m}")))?;
                }
                let lowered = ok(filter.lower(), "filter")?;
                let want_all: Vec<&ExpectedChange> = model.changes.iter().collect();
                let want_f: Vec<&ExpectedChange> = model
                    .changes
                    .iter()
                    .filter(|c| matches(&lowered, &c.filter_document()))
                    .collect();
                let got = read_exactly(&mut all, want_all.len())
                    .await
                    .map_err(TestCaseError::fail)?;
                compare(&got, &want_all)
                    .map_err(|m| TestCaseError::fail(format!("unfiltered consumer: {m}")))?;
                let got_f = read_exactly(&mut filtered, want_f.len())
                    .await
                    .map_err(TestCaseError::fail)?;
                compare(&got_f, &want_f).map_err(|m| {
                    TestCaseError::fail(format!("filtered consumer {filter:?}: {m}"))
                })?;
                // Checkpoint after a random prefix (while holding the stream), stop, restart:
                // exactly the rest follows.
                if !got_f.is_empty() {
                    let k = stop.index(got_f.len());
                    ok(
                        coll.checkpoint(&filtered_name, &got_f[k].token).await,
                        "checkpoint",
                    )?;
                    drop(filtered);
                    let mut resumed = ok(
                        coll.watch(options(
                            &filtered_name,
                            filter.clone(),
                            StartFrom::Checkpoint,
                        ))
                        .await,
                        "re-watch",
                    )?;
                    let rest = read_exactly(&mut resumed, got_f.len() - k - 1)
                        .await
                        .map_err(TestCaseError::fail)?;
                    compare(&rest, &want_f[k + 1..])
                        .map_err(|m| TestCaseError::fail(format!("after restart at {k}: {m}")))?;
                }
                // Bad input is rejected and changes nothing.
                let bad = coll
                    .checkpoint(&filtered_name, &ResumeToken::from_string("not-a-token"))
                    .await;
                prop_assert!(
                    matches!(&bad, Err(e) if e.kind() == datastore_api::ErrorKind::InvalidInput),
                    "{:?}",
                    bad
                );
                Ok(())
            })
        },
    )
}

/// One transaction stays open for seconds while 1,000 inserts (from 4 writers) and 100
/// increments of one document commit. The consumer gets all of those while the transaction is
/// still open, then the late transaction's change once it commits: no gap, no duplicate, the
/// increments in order.
pub(super) fn late_commits_delivered_without_gaps(
    ctx: &Ctx<'_>,
) -> std::result::Result<(), String> {
    let store = ctx.store.clone();
    ctx.rt.block_on(async move {
        let coll = store.health_event_collection();
        coll.delete_many(&Filter::All)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = coll
            .watch(options(&unique("late"), Filter::All, StartFrom::Now))
            .await
            .map_err(|e| e.to_string())?;
        let tx = store.begin().await.map_err(|e| e.to_string())?;
        let late = tx
            .health_event_collection()
            .insert_one(serde_json::from_value(json!({"late": true})).unwrap_or_default())
            .await
            .map_err(|e| e.to_string())?;
        let counter = coll
            .insert_one(serde_json::from_value(json!({"n": 0})).unwrap_or_default())
            .await
            .map_err(|e| e.to_string())?;
        let mut writers = Vec::new();
        for w in 0..4 {
            let s = store.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..250 {
                    let d =
                        serde_json::from_value(json!({"writer": w, "i": i})).unwrap_or_default();
                    s.health_event_collection().insert_one(d).await?;
                }
                Ok::<_, datastore_api::Error>(())
            }));
        }
        let s = store.clone();
        let id = counter.id.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..100 {
                s.health_event_collection()
                    .update_one(&Filter::eq("_id", id.as_str()), &Update::new().inc("n", 1))
                    .await?;
            }
            Ok(())
        }));
        for w in writers {
            w.await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        let before = read_exactly(&mut stream, 1 + 1000 + 100).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.commit().await.map_err(|e| e.to_string())?;
        let after = read_exactly(&mut stream, 1).await?;

        let mut seen: HashMap<(DocumentId, &'static str), usize> = HashMap::new();
        let mut last_n = 0;
        for e in before.iter().chain(&after) {
            *seen
                .entry((e.document_id.clone(), e.operation.as_str()))
                .or_default() += 1;
            if e.document_id == counter.id && e.operation == OperationType::Update {
                let n = e
                    .full_document
                    .as_ref()
                    .and_then(|d| d.get("n"))
                    .and_then(|v| v.as_i64())
                    .unwrap_or(-1);
                if n != last_n + 1 {
                    return Err(format!(
                        "updates of one document out of order: n={n} after n={last_n}"
                    ));
                }
                last_n = n;
            }
        }
        if last_n != 100 {
            return Err(format!("saw {last_n} of 100 increments"));
        }
        let inserts = seen.iter().filter(|((_, op), _)| *op == "insert").count();
        if inserts != 1002 || seen.values().any(|n| *n != 1 && *n != 100) {
            return Err(format!(
                "expected 1,002 distinct inserts delivered once each, got {inserts}"
            ));
        }
        if after[0].document_id != late.id {
            return Err("the late transaction's change was not delivered last".into());
        }
        if let Some(pair) = before
            .iter()
            .chain(&after)
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[0].token >= w[1].token)
        {
            return Err(format!(
                "tokens not increasing: {:?} then {:?}",
                pair[0].token, pair[1].token
            ));
        }
        Ok(())
    })
}

async fn insert_n(
    coll: &dyn datastore_api::Collection,
    n: usize,
    tag: &str,
) -> std::result::Result<(), String> {
    for i in 0..n {
        let d = serde_json::from_value(json!({"tag": tag, "i": i})).unwrap_or_default();
        coll.insert_one(d).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One reader per consumer (a second waits as a standby and takes over, from the checkpoint,
/// when the first stops); `lag` counts the matching changes after the checkpoint; pruning keeps
/// what a consumer still needs within the maximum age and what is younger than the minimum age,
/// and reports `HistoryLost` past the maximum age.
pub(super) fn leases_lag_and_retention(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let store = ctx.store.clone();
    ctx.rt.block_on(async move {
        let coll = store.health_event_collection();
        let name = unique("leased");
        let watch = |start| coll.watch(options(&name, Filter::All, start));
        let mut first = watch(StartFrom::Now).await.map_err(|e| e.to_string())?;
        let mut standby = watch(StartFrom::Checkpoint)
            .await
            .map_err(|e| e.to_string())?;
        insert_n(coll, 3, "a").await?;
        let got = read_exactly(&mut first, 3).await?;
        if let Ok(Some(e)) = tokio::time::timeout(POLL * 10, standby.next()).await {
            return Err(format!(
                "a standby read while another stream held the lease: {e:?}"
            ));
        }
        coll.checkpoint(&name, &got[2].token)
            .await
            .map_err(|e| e.to_string())?;
        drop(first);
        insert_n(coll, 2, "b").await?;
        let took_over = read_exactly(&mut standby, 2).await?;
        if took_over
            .iter()
            .any(|e| e.full_document.as_ref().and_then(|d| d.get("tag")) != Some(&json!("b")))
        {
            return Err("the standby did not resume right after the checkpoint".into());
        }

        // Lag: matching changes after the checkpoint.
        let lag = coll
            .lag(&name, &Filter::eq("fullDocument.tag", "b"))
            .await
            .map_err(|e| e.to_string())?;
        if lag.events_behind != 2 || lag.oldest_undelivered_age.is_none() {
            return Err(format!("lag after 2 unprocessed matching changes: {lag:?}"));
        }
        coll.checkpoint(&name, &took_over[1].token)
            .await
            .map_err(|e| e.to_string())?;
        let lag = coll
            .lag(&name, &Filter::All)
            .await
            .map_err(|e| e.to_string())?;
        if lag.events_behind != 0 {
            return Err(format!("lag after checkpointing everything: {lag:?}"));
        }
        drop(standby);

        // A slow consumer keeps its history while the age limit allows.
        let slow = unique("slow");
        let mut s = coll
            .watch(options(&slow, Filter::All, StartFrom::Beginning))
            .await
            .map_err(|e| e.to_string())?;
        let all = read_exactly(&mut s, 5).await?;
        coll.checkpoint(&slow, &all[0].token)
            .await
            .map_err(|e| e.to_string())?;
        drop(s);
        insert_n(coll, 1, "c").await?;
        let keep = datastore_api::RetentionPolicy {
            max_age: Duration::from_secs(3600),
            min_age: Duration::ZERO,
        };
        store
            .prune_change_history(&keep)
            .await
            .map_err(|e| e.to_string())?;
        let mut s = coll
            .watch(options(&slow, Filter::All, StartFrom::Checkpoint))
            .await
            .map_err(|e| e.to_string())?;
        let rest = read_exactly(&mut s, 5).await?;
        if rest[..4]
            .iter()
            .zip(&all[1..])
            .any(|(a, b)| a.document_id != b.document_id)
        {
            return Err("pruning removed changes a consumer still needed".into());
        }
        coll.checkpoint(&slow, &rest[4].token)
            .await
            .map_err(|e| e.to_string())?;
        drop(s);

        // Changes younger than the minimum age stay, even when every consumer is past them.
        let young = datastore_api::RetentionPolicy {
            max_age: Duration::from_secs(3600),
            min_age: Duration::from_secs(3600),
        };
        let deleted = store
            .prune_change_history(&young)
            .await
            .map_err(|e| e.to_string())?;
        if deleted != 0 {
            return Err(format!(
                "pruning deleted {deleted} changes younger than the minimum age"
            ));
        }
        insert_n(coll, 1, "d").await?;

        // Past the age limit the history is gone, and the consumer is told so (where the
        // provider, not the server, decides what history to keep).
        if !ctx.capabilities.provider_retention {
            return Ok(());
        }
        let drop_all = datastore_api::RetentionPolicy {
            max_age: Duration::ZERO,
            min_age: Duration::ZERO,
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let deleted = store
            .prune_change_history(&drop_all)
            .await
            .map_err(|e| e.to_string())?;
        if deleted == 0 {
            return Err("pruning past the age limit deleted nothing".into());
        }
        match coll
            .watch(options(&slow, Filter::All, StartFrom::Checkpoint))
            .await
        {
            Err(e) if e.kind() == datastore_api::ErrorKind::HistoryLost => {}
            Err(e) => return Err(format!("expected HistoryLost, got {e}")),
            Ok(_) => return Err("a checkpoint in pruned history restarted silently".into()),
        }
        match coll.lag(&slow, &Filter::All).await {
            Err(e) if e.kind() == datastore_api::ErrorKind::HistoryLost => Ok(()),
            other => Err(format!("lag of a consumer in pruned history: {other:?}")),
        }
    })
}
