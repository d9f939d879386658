//! The demo step of node-drainer: sets eviction statuses, and resumes unfinished drains on a cold
//! start.

use super::*;

impl Demo<'_> {
    /// node-drainer: compare-and-set to InProgress, eviction status, cold start and the
    /// already-drained check. Returns the drained event ids (at most two).
    pub(super) async fn node_drainer(
        &mut self,
        sample: &[(String, Vec<DocumentId>)],
        quarantined: &[DocumentId],
    ) -> CliResult<Vec<DocumentId>> {
        let health = self.store.health_events();
        let c = "node-drainer";
        let id = &quarantined[0];

        let cas = Filter::eq(ID_FIELD, id.as_str()).and(Filter::ne(
            fields::EVICTION_STATUS,
            EvictionStatus::InProgress.as_str(),
        ));
        let in_progress =
            Update::new().set(fields::EVICTION_STATUS, EvictionStatus::InProgress.as_str());
        for attempt in 1..=2 {
            let (r, t) = timed(health.collection().update_one(&cas, &in_progress)).await;
            let r = r?;
            let expected = if attempt == 1 { 1 } else { 0 };
            self.step(
                c,
                &format!("CAS _id AND eviction != InProgress -> InProgress (#{attempt})"),
                format!("matched {} (expected {expected})", r.matched),
                t,
            );
            ensure(r.matched == expected, || {
                format!(
                    "compare-and-set #{attempt} matched {}, expected {expected}",
                    r.matched
                )
            })?;
        }

        let drained: Vec<DocumentId> = quarantined.iter().take(2).cloned().collect();
        let succeeded = OperationStatus {
            status: Some(EvictionStatus::Succeeded),
            message: "all user pods evicted".to_owned(),
            metadata: BTreeMap::new(),
        };
        let t = Instant::now();
        for id in &drained {
            health.update_pod_eviction_status(id, &succeeded).await?;
        }
        self.step(
            c,
            "update_pod_eviction_status Succeeded",
            counted(drained.len() as u64, "event"),
            t.elapsed(),
        );

        let cold_start = quarantined_events().and(Filter::is_in(
            fields::EVICTION_STATUS,
            ["", EvictionStatus::NotStarted.as_str()],
        ));
        let t = Instant::now();
        let mut stream = health.stream_by_query(cold_start, PAGE_SIZE);
        let (mut events, mut batches) = (0usize, 0usize);
        while let Some(batch) = stream.next().await {
            events += batch?.len();
            batches += 1;
        }
        let t = t.elapsed();
        self.step(
            c,
            "cold start: stream_by_query Q/AQ AND eviction in (\"\", NotStarted)",
            format!(
                "{} in {}",
                counted(events as u64, "event"),
                if batches == 1 {
                    "1 batch".to_owned()
                } else {
                    format!("{batches} batches")
                }
            ),
            t,
        );

        let node = &sample[0].0;
        let (done, t) = timed(health.check_if_node_already_drained(node)).await;
        let done = done?;
        self.step(
            c,
            &format!("check_if_node_already_drained({node})"),
            done,
            t,
        );
        ensure(done, || {
            format!("{node} was drained but check_if_node_already_drained says no")
        })?;
        Ok(drained)
    }
}

impl Demo<'_> {}
