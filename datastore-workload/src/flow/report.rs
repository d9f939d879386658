//! What a flow run reports, and how it prints.

use super::*;

/// What one stage did.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Its consumer name.
    pub consumer: String,
    /// Distinct changes delivered.
    pub received: u64,
    /// Events the stage wrote (quarantined, drained, remediated).
    pub handled: u64,
    /// Changes delivered more than once.
    pub duplicates: u64,
    /// Time from each handled event's insert (`createdAt`) to the stage finishing it (its
    /// write done); cumulative over the earlier stages.
    pub lag: Option<Percentiles>,
    /// Changes received per second, from the first receipt to the last one finished.
    pub rate: f64,
}

/// What a flow run measured.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// Health events inserted.
    pub ingested: u64,
    /// `insert_many` calls.
    pub batches: u64,
    /// Time spent inside `insert_many`.
    pub ingest_time: Duration,
    /// Inserted events the quarantine filter delivers (processing strategy 1).
    pub processable: u64,
    /// Fatal processable events, the ones that go through every stage.
    pub flowing: u64,
    /// From the first insert to the last remediation.
    pub elapsed: Duration,
    /// Per consumer stage, in flow order.
    pub stages: Vec<StageReport>,
    /// What the final verification checked (every line passed).
    pub verified: Vec<String>,
}

impl FlowReport {
    /// Ingested events per second, first insert to last remediation.
    pub fn events_per_second(&self) -> f64 {
        per_second(self.ingested, self.elapsed)
    }

    /// Fully remediated events per second, first insert to last remediation.
    pub fn remediated_per_second(&self) -> f64 {
        per_second(self.flowing, self.elapsed)
    }

    /// Prints the stage table, the end-to-end figures and the verification.
    pub fn print(&self) {
        println!(
            "flow: {} events ingested by {} insert_many calls ({:.2} s inside insert_many, {:.0}/s); \
             {} processable (strategy 1), {} of them fatal: these go through every stage",
            self.ingested,
            self.batches,
            self.ingest_time.as_secs_f64(),
            per_second(self.ingested, self.ingest_time),
            self.processable,
            self.flowing
        );
        println!(
            "  {:<12} {:<18} {:>9} {:>8} {:>5} {:>10} {:>10} {:>10} {:>12}",
            "stage",
            "consumer",
            "received",
            "handled",
            "dups",
            "lag p50",
            "lag p99",
            "lag max",
            "received/s"
        );
        for s in &self.stages {
            let (p50, p99, max) = match s.lag {
                Some(p) => (
                    format!("{:.1} ms", p.p50),
                    format!("{:.1} ms", p.p99),
                    format!("{:.1} ms", p.max),
                ),
                None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            println!(
                "  {:<12} {:<18} {:>9} {:>8} {:>5} {:>10} {:>10} {:>10} {:>12.0}",
                s.stage.label(),
                s.consumer,
                s.received,
                s.handled,
                s.duplicates,
                p50,
                p99,
                max,
                s.rate
            );
        }
        println!(
            "  lag = insert (createdAt, server clock) -> the stage has written the event; \
             cumulative over the stages"
        );
        println!(
            "  end to end: {} events in {:.2} s from the first insert to the last remediation: \
             {:.0} events/s ({:.0} remediated events/s)",
            self.ingested,
            self.elapsed.as_secs_f64(),
            self.events_per_second(),
            self.remediated_per_second()
        );
        for line in &self.verified {
            println!("  verified: {line}");
        }
    }
}
