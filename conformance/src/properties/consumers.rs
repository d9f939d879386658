//! Consumer admin (list, delete, reset) and the per-consumer lag gauge, on a real change stream.

use std::time::Duration;

use datastore_api::metrics::lag;
use datastore_api::{Collection, ErrorKind, Filter, StartFrom};
use futures::StreamExt;
use serde_json::json;

use super::changes::{options, read_exactly, unique};
use crate::Ctx;

type Outcome = std::result::Result<(), String>;

/// Inserts `n` documents `{run, i}` numbered from `from`.
async fn insert_run(coll: &dyn Collection, run: &str, from: u64, n: u64) -> Outcome {
    for i in from..from + n {
        let doc = serde_json::from_value(json!({"run": run, "i": i})).unwrap_or_default();
        coll.insert_one(doc).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The first change a watch of `consumer` from its checkpoint delivers: its `i`.
async fn first_from_checkpoint(
    coll: &dyn Collection,
    consumer: &str,
    run: &Filter,
) -> std::result::Result<u64, String> {
    let mut s = coll
        .watch(options(consumer, run.clone(), StartFrom::Checkpoint))
        .await
        .map_err(|e| e.to_string())?;
    let first = match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
        Ok(Some(Ok(e))) => e,
        other => {
            return Err(format!(
                "{consumer}: no change from its checkpoint: {other:?}"
            ))
        }
    };
    drop(s);
    wait_released(coll, consumer).await?;
    first
        .full_document
        .and_then(|d| d.get("i").and_then(|v| v.as_u64()))
        .ok_or_else(|| "a change without its number".to_owned())
}

/// Waits until no stream holds `consumer`'s lease (a dropped stream releases it in the
/// background).
async fn wait_released(coll: &dyn Collection, consumer: &str) -> Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = coll.consumers().await.map_err(|e| e.to_string())?;
        if listed
            .iter()
            .all(|c| c.consumer != consumer || c.lease_holder.is_none())
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{consumer}: its lease was not released within 10 s of its stream's drop"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `consumers` lists each consumer with its checkpoint time and live lease holder; `delete` and
/// `reset` refuse a consumer whose lease is held (`Conflict`); a reset to a time, to now or to
/// the beginning moves where the next watch from the checkpoint starts; a deleted consumer is
/// gone (deleting it again says so) and starts from now.
pub(super) fn consumer_admin(ctx: &Ctx<'_>) -> Outcome {
    let store = ctx.store.clone();
    ctx.rt.block_on(async move {
        let coll = store.health_event_collection();
        let run = unique("admin");
        let of_run = Filter::eq("operationType", "insert").and(Filter::eq("fullDocument.run", run.as_str()));
        let name = unique("admin-consumer");
        let since = coll.server_time().await.map_err(|e| e.to_string())?;
        insert_run(coll, &run, 0, 3).await?;

        // Read two, checkpoint the second; while the stream runs, admin calls are refused.
        let mut s = coll
            .watch(options(&name, of_run.clone(), StartFrom::Time(since)))
            .await
            .map_err(|e| e.to_string())?;
        let got = read_exactly(&mut s, 3).await?;
        coll.checkpoint(&name, &got[1].token).await.map_err(|e| e.to_string())?;
        let listed = coll.consumers().await.map_err(|e| e.to_string())?;
        let me = listed
            .iter()
            .find(|c| c.consumer == name)
            .ok_or_else(|| format!("consumers() does not list {name}: {listed:?}"))?;
        let now = coll.server_time().await.map_err(|e| e.to_string())?;
        let fresh = me
            .checkpointed_at
            .is_some_and(|t| (now - t).num_seconds().abs() < 60);
        if !me.checkpointed || !fresh || me.lease_holder.is_none() || me.lease_until.is_none() {
            return Err(format!("a running consumer with a checkpoint just written is listed as {me:?}"));
        }
        for refused in [
            coll.delete_consumer(&name).await.map(|_| ()),
            coll.reset_consumer(&name, StartFrom::Now).await,
        ] {
            match refused {
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                other => return Err(format!("an admin call on a running consumer gave {other:?}, not Conflict")),
            }
        }
        drop(s);
        wait_released(coll, &name).await?;
        if first_from_checkpoint(coll, &name, &of_run).await? != 2 {
            return Err("the watch from the checkpoint did not resume after it".into());
        }

        // Reset to a time: the changes from then come again.
        coll.reset_consumer(&name, StartFrom::Time(since)).await.map_err(|e| e.to_string())?;
        if first_from_checkpoint(coll, &name, &of_run).await? != 0 {
            return Err("after a reset to a time, the watch did not start at the first change since".into());
        }
        // A stream whose lease lapsed cannot undo a reset: once the reset freed its lease, its
        // checkpoints and its renewal fail.
        let mut short = options(&name, of_run.clone(), StartFrom::Checkpoint);
        short.lease_ttl = Duration::from_millis(300);
        let mut stale = coll.watch(short).await.map_err(|e| e.to_string())?;
        let old = read_exactly(&mut stale, 3).await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Reset to now: nothing behind; the next change is the first delivered.
        coll.reset_consumer(&name, StartFrom::Now)
            .await
            .map_err(|e| format!("a reset after the lease lapsed: {e}"))?;
        match coll.checkpoint(&name, &old[2].token).await {
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            other => return Err(format!("a stream whose lease lapsed checkpointed over a reset: {other:?}")),
        }
        match tokio::time::timeout(Duration::from_secs(5), stale.next()).await {
            Ok(Some(Err(e))) if e.kind() == ErrorKind::Conflict => {}
            other => return Err(format!("a stream whose lease a reset freed went on instead of ending with Conflict: {other:?}")),
        }
        drop(stale);
        let behind = coll.lag(&name, &of_run).await.map_err(|e| e.to_string())?;
        if behind.events_behind != 0 {
            return Err(format!("right after a reset to now, lag is {behind:?}"));
        }
        insert_run(coll, &run, 3, 1).await?;
        if first_from_checkpoint(coll, &name, &of_run).await? != 3 {
            return Err("after a reset to now, the watch did not start at the next change".into());
        }
        // Reset to the beginning: every change of the run is behind again.
        coll.reset_consumer(&name, StartFrom::Beginning).await.map_err(|e| e.to_string())?;
        let behind = coll.lag(&name, &of_run).await.map_err(|e| e.to_string())?;
        if behind.events_behind != 4 {
            return Err(format!("after a reset to the beginning, {} of the run's 4 changes are behind", behind.events_behind));
        }
        match coll.reset_consumer(&name, StartFrom::Checkpoint).await {
            Err(e) if e.kind() == ErrorKind::InvalidInput => {}
            other => return Err(format!("a reset to Checkpoint gave {other:?}, not InvalidInput")),
        }

        // Delete: gone, and a second delete says so; a watch from its checkpoint starts now.
        if !coll.delete_consumer(&name).await.map_err(|e| e.to_string())? {
            return Err("deleting an existing consumer said it did not exist".into());
        }
        let listed = coll.consumers().await.map_err(|e| e.to_string())?;
        if listed.iter().any(|c| c.consumer == name) {
            return Err(format!("a deleted consumer is still listed: {listed:?}"));
        }
        if coll.delete_consumer(&name).await.map_err(|e| e.to_string())? {
            return Err("deleting a deleted consumer said it existed".into());
        }
        let mut s = coll
            .watch(options(&name, of_run.clone(), StartFrom::Checkpoint))
            .await
            .map_err(|e| e.to_string())?;
        insert_run(coll, &run, 4, 1).await?;
        let got = read_exactly(&mut s, 1).await?;
        let i = got[0].full_document.as_ref().and_then(|d| d.get("i")).cloned();
        if i != Some(json!(4)) {
            return Err(format!("a deleted consumer's watch from its checkpoint delivered {i:?}, not the next change"));
        }
        Ok(())
    })
}

/// `change_stream_lag_seconds` of a consumer is unknown before its stream reads, keeps rising
/// while the consumer is stopped, and falls to about zero once it has caught up again.
pub(super) fn lag_metric_rises_while_stopped(ctx: &Ctx<'_>) -> Outcome {
    let store = ctx.store.clone();
    ctx.rt.block_on(async move {
        let coll = store.health_event_collection();
        let run = unique("lagged");
        let of_run =
            Filter::eq("operationType", "insert").and(Filter::eq("fullDocument.run", run.as_str()));
        let name = unique("lag-consumer");
        if let Some(l) = lag::current(&name) {
            return Err(format!("a consumer that never read has a lag of {l:?}"));
        }
        let since = coll.server_time().await.map_err(|e| e.to_string())?;
        insert_run(coll, &run, 0, 2).await?;
        let mut s = coll
            .watch(options(&name, of_run.clone(), StartFrom::Time(since)))
            .await
            .map_err(|e| e.to_string())?;
        let got = read_exactly(&mut s, 2).await?;
        coll.checkpoint(&name, &got[1].token)
            .await
            .map_err(|e| e.to_string())?;
        drop(s);

        // Stopped: the lag rises with the clock, whatever is committed meanwhile.
        insert_run(coll, &run, 2, 3).await?;
        let stopped = lag::current(&name).ok_or("no lag known after reading two changes")?;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let later = lag::current(&name).ok_or("the lag became unknown")?;
        if later < stopped + Duration::from_secs(1) {
            return Err(format!(
                "the lag of a stopped consumer went from {stopped:?} to {later:?} in 1.2 s"
            ));
        }

        // Restarted from its checkpoint: it catches up and the lag falls to about zero.
        let mut s = coll
            .watch(options(&name, of_run.clone(), StartFrom::Checkpoint))
            .await
            .map_err(|e| e.to_string())?;
        read_exactly(&mut s, 3).await?;
        // The evidence is the stream's next read that finds nothing (a MongoDB getMore waits
        // up to a second for news first): keep the stream polled while waiting for it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let caught_up = lag::current(&name).ok_or("the lag became unknown")?;
            if caught_up <= Duration::from_millis(500) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("5 s after catching up, the lag is {caught_up:?} (it was {later:?} while stopped)"));
            }
            if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(50), s.next()).await {
                return Err(format!("an unexpected extra change arrived: {extra:?}"));
            }
        }
        Ok(())
    })
}

/// A consumer whose stream is dropped and opened again at once, in the same process, takes
/// its lease straight back: the reopened stream delivers at once, not after a standby's retry
/// period (a fifth of the lease lifetime; a minute's lease here makes that 12 s).
pub(super) fn reopened_stream_delivers_at_once(ctx: &Ctx<'_>) -> Outcome {
    let store = ctx.store.clone();
    ctx.rt.block_on(async move {
        let coll = store.health_event_collection();
        let run = unique("reopened");
        let of_run =
            Filter::eq("operationType", "insert").and(Filter::eq("fullDocument.run", run.as_str()));
        let name = unique("reopen-consumer");
        let watch = |start| {
            let mut o = options(&name, of_run.clone(), start);
            o.lease_ttl = Duration::from_secs(60);
            o
        };
        let mut s = coll
            .watch(watch(StartFrom::Now))
            .await
            .map_err(|e| e.to_string())?;
        for cycle in 0..5 {
            insert_run(coll, &run, cycle, 1).await?;
            let started = tokio::time::Instant::now();
            let got = tokio::time::timeout(Duration::from_secs(6), read_exactly(&mut s, 1))
                .await
                .map_err(|_| {
                    format!("cycle {cycle}: the reopened stream delivered nothing within 6 s")
                })??;
            let took = started.elapsed();
            if took > Duration::from_secs(5) {
                return Err(format!("cycle {cycle}: delivered after {took:?}"));
            }
            coll.checkpoint(&name, &got[0].token)
                .await
                .map_err(|e| e.to_string())?;
            drop(s);
            s = coll
                .watch(watch(StartFrom::Checkpoint))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// A checkpoint takes only a token a stream of the same collection issued: one of another
/// collection's stream, one cut short and one made up are refused as `InvalidInput`, and the
/// consumer's checkpoint stays where it was.
pub(super) fn checkpoints_refuse_tokens_not_issued_here(ctx: &Ctx<'_>) -> Outcome {
    let store = ctx.store.clone();
    ctx.rt.block_on(async move {
        let health = store.health_event_collection();
        let maintenance = store.maintenance_event_collection();
        let run = unique("foreign");
        let of_run =
            Filter::eq("operationType", "insert").and(Filter::eq("fullDocument.run", run.as_str()));
        let name = unique("foreign-consumer");
        let mut s = maintenance
            .watch(options(&name, of_run.clone(), StartFrom::Now))
            .await
            .map_err(|e| e.to_string())?;
        insert_run(maintenance, &run, 0, 1).await?;
        let foreign = read_exactly(&mut s, 1).await?.remove(0).token;
        drop(s);
        let mut s = health
            .watch(options(&name, of_run, StartFrom::Now))
            .await
            .map_err(|e| e.to_string())?;
        insert_run(health, &run, 0, 1).await?;
        let ours = read_exactly(&mut s, 1).await?.remove(0).token;
        health
            .checkpoint(&name, &ours)
            .await
            .map_err(|e| format!("our own token: {e}"))?;
        let checkpointed_at = |infos: Vec<datastore_api::ConsumerInfo>| {
            infos
                .into_iter()
                .find(|c| c.consumer == name)
                .and_then(|c| c.checkpointed_at)
        };
        let before = checkpointed_at(health.consumers().await.map_err(|e| e.to_string())?);
        let cut: String = ours.as_str().chars().take(20).collect();
        let made_up = "1".repeat(10_000);
        let bad = [
            ("another collection's token", foreign),
            (
                "a token cut short",
                datastore_api::ResumeToken::from_string(cut),
            ),
            (
                "a made-up token",
                datastore_api::ResumeToken::from_string(made_up),
            ),
        ];
        for (what, token) in bad {
            match health.checkpoint(&name, &token).await {
                Err(e) if e.kind() == ErrorKind::InvalidInput => {}
                other => return Err(format!("{what}: expected InvalidInput, got {other:?}")),
            }
        }
        let after = checkpointed_at(health.consumers().await.map_err(|e| e.to_string())?);
        if before.is_none() || after != before {
            return Err(format!("the checkpoint changed: {before:?} then {after:?}"));
        }
        Ok(())
    })
}
