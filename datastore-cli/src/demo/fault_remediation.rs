//! The demo step of fault-remediation: records remediations of drained events.

use super::*;

impl Demo<'_> {
    /// fault-remediation: remediation status and its cold-start query.
    pub(super) async fn fault_remediation(&mut self, drained: &[DocumentId]) -> CliResult<()> {
        let health = self.store.health_events();
        let c = "fault-remediation";
        let (r, t) = timed(health.update_remediation_status(&drained[0], true)).await;
        self.step(
            c,
            "update_remediation_status(true)",
            format!("matched {}", r?.matched),
            t,
        );

        let cold_start = quarantined_events()
            .and(Filter::is_in(
                fields::EVICTION_STATUS,
                [
                    EvictionStatus::Succeeded.as_str(),
                    EvictionStatus::AlreadyDrained.as_str(),
                ],
            ))
            .and(Filter::eq(
                fields::FAULT_REMEDIATED,
                datastore::Scalar::Null,
            ));
        let t = Instant::now();
        let mut stream = health.stream_by_query(cold_start, PAGE_SIZE);
        let mut events = 0usize;
        while let Some(batch) = stream.next().await {
            events += batch?.len();
        }
        let t = t.elapsed();
        self.step(
            c,
            "cold start: drained AND faultremediated null",
            counted(events as u64, "event"),
            t,
        );
        if self.exclusive {
            let expected = drained.len() - 1;
            ensure(events == expected, || {
                format!("remediation cold start found {events} events, expected {expected}")
            })?;
        }
        Ok(())
    }
}
