//! The demo step of csp-health-monitor: maintenance events upserted, re-polled and queried.

use super::*;

impl Demo<'_> {
    /// csp-health-monitor: upserts, the trigger queries, status updates and lookups. Returns the
    /// event id the transaction step updates.
    pub(super) async fn csp_health_monitor(&mut self) -> CliResult<String> {
        let maintenance = self.store.maintenance_events();
        let c = "csp-health-monitor";
        let now = maintenance.collection().server_time().await?;
        let mut synth = Synth::new(self.args.seed, self.args.nodes as usize, now);
        let events: Vec<_> = (0..MAINTENANCE_EVENTS)
            .map(|i| synth.maintenance_event(i, now))
            .collect();

        let t = Instant::now();
        let mut new = 0;
        for e in &events {
            new += usize::from(maintenance.upsert(e).await?.inserted);
        }
        self.step(
            c,
            &format!("upsert x{}", events.len()),
            format!("{new} new"),
            t.elapsed(),
        );
        let by_event_id = |id: &str| Filter::eq(mf::EVENT_ID, id);

        let again = &events[5];
        let (outcome, t) = timed(maintenance.upsert(again)).await;
        let outcome = outcome?;
        let copies = maintenance
            .collection()
            .count(&by_event_id(&again.event_id))
            .await?;
        self.step(
            c,
            &format!("upsert {} again (unchanged)", again.event_id),
            format!("inserted={}, {copies} stored", outcome.inserted),
            t,
        );
        ensure(!outcome.inserted && copies == 1, || {
            format!(
                "re-upsert of {} inserted={} with {copies} copies",
                again.event_id, outcome.inserted
            )
        })?;

        let (due, t) =
            timed(maintenance.find_events_to_trigger_quarantine(Duration::from_secs(3600))).await;
        let due = due?;
        self.step(
            c,
            "find_events_to_trigger_quarantine(within 1h)",
            counted(due.len() as u64, "event"),
            t,
        );
        let first = due
            .first()
            .map(|r| r.event.clone())
            .ok_or_else(|| CliError::check("no maintenance event is due for quarantine"))?;

        let (r, t) = timed(
            maintenance.update_event_status(&first.event_id, InternalStatus::QuarantineTriggered),
        )
        .await;
        self.step(
            c,
            &format!(
                "update_event_status({}, QUARANTINE_TRIGGERED)",
                first.event_id
            ),
            format!("matched {}", r?.matched),
            t,
        );

        // The provider re-polls the event (still DETECTED on its side): NVSentinel's progress stays.
        let (outcome, t) = timed(maintenance.upsert(&first)).await;
        let outcome = outcome?;
        let stored = maintenance
            .collection()
            .find(&by_event_id(&first.event_id), &FindOptions::default())
            .await?;
        let status = stored
            .first()
            .and_then(|d| d.get(mf::STATUS))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        self.step(
            c,
            &format!("upsert {} re-polled as DETECTED", first.event_id),
            format!("kept {status}"),
            t,
        );
        ensure(
            !outcome.inserted && status == InternalStatus::QuarantineTriggered.as_str(),
            || format!("re-polled upsert left status {status:?}, expected QUARANTINE_TRIGGERED"),
        )?;

        let (ready, t) =
            timed(maintenance.find_events_to_trigger_healthy(Duration::from_secs(15 * 60))).await;
        self.step(
            c,
            "find_events_to_trigger_healthy(15m after end)",
            counted(ready?.len() as u64, "event"),
            t,
        );

        let (last, t) = timed(maintenance.last_processed_event_timestamp(CLUSTER, Csp::Gcp)).await;
        let last = last?.map_or_else(
            || "none".to_owned(),
            |ts| ts.format("%H:%M:%S%.3f").to_string(),
        );
        self.step(c, "last_processed_event_timestamp(cluster, gcp)", last, t);

        let node = &first.node_name;
        let (ongoing, t) = timed(maintenance.find_latest_ongoing_event_by_node(node)).await;
        let ongoing = ongoing?.map_or_else(
            || "none".to_owned(),
            |r| format!("{} {}", r.event.event_id, r.event.status),
        );
        self.step(
            c,
            &format!("find_latest_ongoing_event_by_node({node})"),
            ongoing,
            t,
        );

        let other = due
            .iter()
            .map(|r| r.event.event_id.clone())
            .find(|id| *id != first.event_id)
            .unwrap_or(first.event_id);
        Ok(other)
    }
}
