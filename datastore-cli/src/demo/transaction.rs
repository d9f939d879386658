//! The demo step of A transaction over both collections, as csp-health-monitor commits a span id
//! and a status.

use super::*;

impl Demo<'_> {
    /// A transaction spanning both stores: two writes, one commit.
    pub(super) async fn transaction(
        &mut self,
        health_id: &DocumentId,
        event_id: &str,
    ) -> CliResult<()> {
        let t = Instant::now();
        let tx = self.store.begin().await?;
        let writes = async {
            tx.health_events()
                .update_span_id(health_id, "csp-health-monitor", "00f067aa0ba902b7")
                .await?;
            tx.maintenance_events()
                .update_event_status(event_id, InternalStatus::MaintenanceOngoing)
                .await?;
            Ok::<_, datastore::Error>(())
        }
        .await;
        match writes {
            Ok(()) => tx.commit().await?,
            Err(e) => {
                // The write's error is the one to report; rollback is best effort.
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        }
        let elapsed = t.elapsed();
        let stored = self.store.health_events().get(health_id).await?;
        let visible = stored.is_some_and(|r| r.status.span_ids.contains_key("csp-health-monitor"));
        self.step(
            "transaction",
            &format!("begin; update_span_id + update_event_status({event_id}); commit"),
            "2 writes committed",
            elapsed,
        );
        ensure(visible, || {
            "the committed span id is not visible".to_owned()
        })
    }
}
