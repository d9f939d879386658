//! The demo step of fault-quarantine: marks nodes quarantined for their fatal events, and finds
//! them again on a cold start.

use super::*;

impl Demo<'_> {
    /// fault-quarantine: the processable-inserts filter, quarantine updates, latest event of a
    /// node and the cancel flow. Returns the Quarantined event id of each sample node.
    pub(super) async fn fault_quarantine(
        &mut self,
        sample: &[(String, Vec<DocumentId>)],
    ) -> CliResult<Vec<DocumentId>> {
        let health = self.store.health_events();
        let c = "fault-quarantine";

        let processable = Filter::eq(fields::PROCESSING_STRATEGY, 1)
            .or(Filter::exists(fields::PROCESSING_STRATEGY, false));
        let (n, t) = timed(health.collection().count(&processable)).await;
        self.step(
            c,
            "count processable inserts (strategy == 1 OR missing)",
            counted(n?, "event"),
            t,
        );

        // The first fatal event of a node quarantines it; later ones find it already quarantined.
        let mut updates = 0;
        let mut quarantined = Vec::with_capacity(sample.len());
        let t = Instant::now();
        for (_, ids) in sample {
            for (i, id) in ids.iter().enumerate() {
                let status = if i == 0 {
                    QuarantineStatus::Quarantined
                } else {
                    QuarantineStatus::AlreadyQuarantined
                };
                let span = format!("{:016x}", 0xfa_0000_0000_u64 + updates);
                health
                    .update_node_quarantine_status(id, status, &span)
                    .await?;
                updates += 1;
            }
            quarantined.push(ids[0].clone());
        }
        self.step(
            c,
            "update_node_quarantine_status (Quarantined / AlreadyQuarantined)",
            format!("{updates} events on {} nodes", sample.len()),
            t.elapsed(),
        );

        let node = &sample[0].0;
        let (latest, t) = timed(health.find_latest_event_for_node(node)).await;
        let latest = latest?.ok_or_else(|| CliError::check(format!("{node} has no events")))?;
        self.step(
            c,
            &format!("find_latest_event_for_node({node})"),
            format!("1 event ({})", latest.event.check_name),
            t,
        );

        // Cancel flow (manual uncordon) on the last sample node.
        let (node, ids) = &sample[sample.len() - 1];
        let newest_quarantined = Filter::eq(fields::NODE_NAME, node.as_str()).and(Filter::eq(
            fields::NODE_QUARANTINED,
            QuarantineStatus::Quarantined.as_str(),
        ));
        let (latest, t) = timed(health.find_latest_by_query(&newest_quarantined)).await;
        let latest =
            latest?.ok_or_else(|| CliError::check(format!("{node} has no Quarantined event")))?;
        self.step(
            c,
            &format!("cancel: latest Quarantined event of {node}"),
            "1 event",
            t,
        );
        let filter = Filter::eq(fields::NODE_NAME, node.as_str())
            .and(Filter::gte(CREATED_AT_FIELD, latest.created_at))
            .and(Filter::is_in(
                fields::NODE_QUARANTINED,
                [
                    QuarantineStatus::Quarantined.as_str(),
                    QuarantineStatus::AlreadyQuarantined.as_str(),
                ],
            ));
        let cancel = Update::new().set(
            fields::NODE_QUARANTINED,
            QuarantineStatus::Cancelled.as_str(),
        );
        let (r, t) = timed(health.update_many(&filter, &cancel)).await;
        let r = r?;
        self.step(
            c,
            "cancel: update_many(node, createdAt >= latest, Q/AQ) -> Cancelled",
            format!("matched {}, modified {}", r.matched, r.modified),
            t,
        );
        if self.exclusive {
            ensure(r.modified == ids.len() as u64, || {
                format!(
                    "cancel flow modified {} events of {node}, expected {}",
                    r.modified,
                    ids.len()
                )
            })?;
        }
        if sample.len() > 1 {
            quarantined.pop();
        }
        Ok(quarantined)
    }
}
