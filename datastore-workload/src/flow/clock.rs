//! The server's clock as seen from here (`createdAt` is server time).

use super::*;

/// The server's clock as seen from here: `createdAt` is server time.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerClock {
    pub(super) offset: chrono::Duration,
}

impl ServerClock {
    /// Estimates the offset from the fastest of three `server_time` round trips.
    pub(super) async fn measure(collection: &dyn Collection) -> CliResult<Self> {
        let mut best: Option<(Duration, chrono::Duration)> = None;
        for _ in 0..3 {
            let before = Utc::now();
            let t = Instant::now();
            let server = collection.server_time().await?;
            let rtt = t.elapsed();
            let mid = before + chrono::Duration::from_std(rtt / 2).unwrap_or_default();
            let faster = match best {
                None => true,
                Some((fastest, _)) => rtt < fastest,
            };
            if faster {
                best = Some((rtt, server - mid));
            }
        }
        Ok(ServerClock {
            offset: best.map_or_else(chrono::Duration::zero, |(_, o)| o),
        })
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Time since `t` (server clock); zero when `t` looks later than now.
    pub(super) fn since(&self, t: DateTime<Utc>) -> Duration {
        (self.now() - t).to_std().unwrap_or_default()
    }
}
