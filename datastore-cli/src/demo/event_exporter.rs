//! The demo step of event-exporter: the backfill from a start time, paged and streamed.

use super::*;

impl Demo<'_> {
    /// event-exporter: the createdAt-range backfill and a keyset walk over this run's events.
    pub(super) async fn event_exporter(
        &mut self,
        started_at: chrono::DateTime<Utc>,
        events: u64,
    ) -> CliResult<()> {
        let collection = self.store.health_event_collection();
        let c = "event-exporter";
        let until = collection.server_time().await? + chrono::Duration::milliseconds(1);
        let range =
            Filter::gte(CREATED_AT_FIELD, started_at).and(Filter::lt(CREATED_AT_FIELD, until));
        let options = FindOptions::sorted(Sort::asc(CREATED_AT_FIELD)).limit(u64::from(PAGE_SIZE));
        let (docs, t) = timed(collection.find(&range, &options)).await;
        let docs = docs?;
        self.step(
            c,
            &format!("backfill: find createdAt in [start, now) oldest first, limit {PAGE_SIZE}"),
            format!("{} docs", docs.len()),
            t,
        );
        let created: Vec<_> = docs
            .iter()
            .map(|d| d.get(CREATED_AT_FIELD).cloned())
            .collect();
        let sorted = created.windows(2).all(|w| {
            datastore::value::sort_compare(w[0].as_ref(), w[1].as_ref())
                != std::cmp::Ordering::Greater
        });
        ensure(sorted, || {
            "backfill documents are not oldest first".to_owned()
        })?;

        let mut request = PageRequest {
            direction: Direction::Ascending,
            size: PAGE_SIZE,
            after: None,
        };
        let this_run = Filter::gte(CREATED_AT_FIELD, started_at);
        let (mut pages, mut seen) = (0u64, 0u64);
        let t = Instant::now();
        loop {
            let page = collection.find_page(&this_run, &request).await?;
            pages += 1;
            seen += page.documents.len() as u64;
            match page.next {
                Some(next) => request.after = Some(next),
                None => break,
            }
        }
        self.step(
            c,
            &format!("keyset walk: find_page x{pages} (size {PAGE_SIZE})"),
            format!("{seen} docs"),
            t.elapsed(),
        );
        if self.exclusive {
            ensure(seen == events, || {
                format!("keyset walk returned {seen} documents, expected {events}")
            })?;
        }
        Ok(())
    }
}
