//! The server clock as the provider reads it.
//!
//! MongoDB has no server-side "now" that an insert can store in a field, so the provider
//! measures the offset between the server's clock (`hello.localTime`) and its own when it
//! connects, and stamps `createdAt`, `CurrentDate` and `server_time()` from that one estimate
//! (accurate to about half a round trip plus the server's millisecond resolution). All three
//! therefore agree with each other and never run backwards within a process.

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use datastore_api::value::truncate_to_millis;
use datastore_api::Result;
use mongodb::bson::doc;
use mongodb::Database;

use crate::convert::chrono_date;
use crate::error::map_err;

/// The server-clock estimate: the server's time at `origin` plus the monotonic time since.
#[derive(Debug)]
pub(crate) struct ServerClock {
    origin: Instant,
    server_at_origin: DateTime<Utc>,
    last: Mutex<DateTime<Utc>>,
}

impl ServerClock {
    /// Reads the server's clock once (falls back to the local clock when the server does not
    /// report `localTime`).
    pub(crate) async fn measure(db: &Database) -> Result<ServerClock> {
        let sent = Instant::now();
        let hello = db.run_command(doc! { "hello": 1 }).await.map_err(map_err)?;
        let rtt = sent.elapsed();
        let origin = sent + rtt / 2;
        let server_at_origin = match hello.get_datetime("localTime") {
            Ok(t) => chrono_date(*t)?,
            Err(_) => Utc::now(),
        };
        Ok(ServerClock {
            origin,
            server_at_origin,
            last: Mutex::new(server_at_origin),
        })
    }

    /// The server's current time, to the millisecond, never earlier than a previous reading.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let elapsed = ChronoDuration::from_std(self.origin.elapsed()).unwrap_or_default();
        let t = truncate_to_millis(self.server_at_origin + elapsed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if t > *last {
            *last = t;
        }
        *last
    }
}
