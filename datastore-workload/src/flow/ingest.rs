//! Ingest: the synthetic events inserted in batches, as platform-connectors does.

use super::*;

/// What ingest inserted.
pub(super) struct Ingested {
    pub(super) inserted: u64,
    pub(super) batches: u64,
    pub(super) took: Duration,
    pub(super) processable: u64,
    /// Ids of the fatal processable events.
    pub(super) flowing: HashSet<DocumentId>,
}

/// Inserts the synthetic events in batches, like platform-connectors does per gRPC call.
pub(super) async fn ingest(
    store: &dyn DataStore,
    opts: &FlowOptions,
    bars: &Bars,
    signal: &watch::Sender<Signal>,
) -> Result<Ingested, Failure> {
    let first_generated = Utc::now() - chrono::Duration::milliseconds(100 * opts.events as i64);
    let mut synth = Synth::new(opts.seed, opts.nodes, first_generated);
    let health = store.health_events();
    let mut out = Ingested {
        inserted: 0,
        batches: 0,
        took: Duration::ZERO,
        processable: 0,
        flowing: HashSet::new(),
    };
    let mut remaining = opts.events;
    while remaining > 0 {
        if signal.borrow().abort {
            return Err(Failure::Aborted);
        }
        let n = remaining.min(opts.batch);
        let mut batch = synth.health_events(n as usize);
        if let Some(run) = &opts.run_id {
            for (event, _) in &mut batch {
                event.metadata.insert(RUN_MARKER.to_owned(), run.clone());
            }
        }
        let t = Instant::now();
        let inserted = match health.insert_many(&batch).await {
            Ok(v) => v,
            Err(e) => {
                signal.send_modify(|s| s.abort = true);
                return Err(e.into());
            }
        };
        out.took += t.elapsed();
        if inserted.len() != batch.len() {
            signal.send_modify(|s| s.abort = true);
            return Err(Failure::Error(CliError::check(format!(
                "insert_many returned {} ids for {} events",
                inserted.len(),
                batch.len()
            ))));
        }
        for ((event, _), ins) in batch.iter().zip(inserted) {
            // The canonical document always carries `processingstrategy`, so "processable"
            // (strategy 1 or missing) is strategy 1 here.
            if event.processing_strategy == ProcessingStrategy::ExecuteRemediation {
                out.processable += 1;
                if event.is_fatal {
                    out.flowing.insert(ins.id);
                }
            }
        }
        out.inserted += n;
        out.batches += 1;
        remaining -= n;
        bars.ingest.inc(n);
        bars.stages[0].set_length(out.processable);
        for b in &bars.stages[1..] {
            b.set_length(out.flowing.len() as u64);
        }
    }
    Ok(out)
}
