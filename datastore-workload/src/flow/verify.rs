//! Verification: every fatal event went through every stage exactly once.

use super::*;

/// Checks that every fatal processable event completed every stage exactly once, in the
/// stages' own records and in the database. Returns what was checked.
pub(super) async fn verify(
    store: &dyn DataStore,
    opts: &FlowOptions,
    ingested: &Ingested,
    runs: &[StageRun],
) -> CliResult<Vec<String>> {
    let expected = ingested.flowing.len() as u64;
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for run in runs {
        if !run.duplicates.is_empty() {
            problems.push(format!(
                "{} received {} change(s) twice (first: {})",
                run.consumer,
                run.duplicates.len(),
                run.duplicates[0]
            ));
        }
        if run.handled != ingested.flowing {
            let missing = ingested.flowing.difference(&run.handled).count();
            let extra = run.handled.difference(&ingested.flowing).count();
            problems.push(format!(
                "{} handled {} events: {missing} of the {expected} expected missing, {extra} unexpected",
                run.consumer,
                run.handled.len()
            ));
        }
        if run.stage == Stage::Quarantine && run.received.len() as u64 != ingested.processable {
            problems.push(format!(
                "{} received {} processable inserts, {} were inserted",
                run.consumer,
                run.received.len(),
                ingested.processable
            ));
        }
    }
    checked.push(format!(
        "each stage handled exactly the {expected} fatal processable events, none twice"
    ));

    // The stored documents.
    let collection = store.health_event_collection();
    let scope = opts.scope();
    let complete = scope
        .clone()
        .and(Filter::eq(fields::IS_FATAL, true))
        .and(Filter::eq(fields::PROCESSING_STRATEGY, 1))
        .and(Filter::eq(
            fields::NODE_QUARANTINED,
            QuarantineStatus::Quarantined.as_str(),
        ))
        .and(Filter::eq(
            fields::EVICTION_STATUS,
            EvictionStatus::Succeeded.as_str(),
        ))
        .and(Filter::eq(
            format!("{}.value", fields::FAULT_REMEDIATED),
            true,
        ));
    let counts = [
        ("quarantined, drained and remediated", complete),
        (
            "with any quarantine status",
            scope.clone().and(Filter::is_in(
                fields::NODE_QUARANTINED,
                [
                    QuarantineStatus::Quarantined.as_str(),
                    QuarantineStatus::AlreadyQuarantined.as_str(),
                    QuarantineStatus::UnQuarantined.as_str(),
                    QuarantineStatus::Cancelled.as_str(),
                ],
            )),
        ),
        (
            "with eviction Succeeded",
            scope.clone().and(Filter::eq(
                fields::EVICTION_STATUS,
                EvictionStatus::Succeeded.as_str(),
            )),
        ),
        (
            "with faultremediated {value: true}",
            scope.and(Filter::eq(
                format!("{}.value", fields::FAULT_REMEDIATED),
                true,
            )),
        ),
    ];
    for (what, filter) in counts {
        let n = collection.count(&filter).await?;
        if n != expected {
            problems.push(format!("{n} stored events are {what}, expected {expected}"));
        }
    }
    checked.push(format!(
        "the database holds exactly {expected} events quarantined, {expected} drained \
         (Succeeded), {expected} remediated, and they are the same fatal processable events"
    ));

    // Nothing is left after any consumer's checkpoint.
    let mut behind = Vec::new();
    for stage in STAGES {
        let consumer = opts.consumer(stage);
        let lag = collection.lag(&consumer, &opts.stage_filter(stage)).await?;
        behind.push(format!("{consumer} {}", lag.events_behind));
        if lag.events_behind != 0 {
            problems.push(format!(
                "{consumer} has {} matching change(s) after its checkpoint",
                lag.events_behind
            ));
        }
    }
    checked.push(format!(
        "changes left after each checkpoint: {}",
        behind.join(", ")
    ));

    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(CliError::check(format!(
            "the flow did not complete exactly once: {}",
            problems.join("; ")
        )))
    }
}
