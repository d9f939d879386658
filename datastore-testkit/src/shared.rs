//! One lazily started server per process, for every kind of test server.

use std::sync::OnceLock;

use crate::{HarnessError, Server};

/// A shared server, or how starting it failed (message, log tail): a `static` holds it.
pub(crate) type SharedSlot<T> = Result<T, (String, String)>;

/// The instance in `slot`: the first call runs `init`; later calls return its instance, or
/// its error again as [`HarnessError::StartFailed`] (for `server`).
pub(crate) fn shared_in<T: Sync>(
    slot: &'static OnceLock<SharedSlot<T>>,
    server: Server,
    init: impl FnOnce() -> Result<T, HarnessError>,
) -> Result<&'static T, HarnessError> {
    let slot = slot.get_or_init(|| {
        init().map_err(|error| match error {
            HarnessError::StartFailed {
                message, log_tail, ..
            } => (message, log_tail),
            other => (other.to_string(), String::new()),
        })
    });
    match slot {
        Ok(instance) => Ok(instance),
        Err((message, log_tail)) => Err(HarnessError::start_failed(
            server,
            message.clone(),
            log_tail.clone(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_shared_start_is_reported_on_every_call() {
        static SLOT: OnceLock<SharedSlot<()>> = OnceLock::new();
        let first = shared_in(&SLOT, Server::Mongo, || {
            Err(HarnessError::StandInMissing {
                kind: crate::mongo::StandIn::Jongodb,
                path: "/nowhere/jongodb".into(),
                from_env: false,
            })
        })
        .unwrap_err();
        let second =
            shared_in(&SLOT, Server::Mongo, || panic!("must not start twice")).unwrap_err();
        for err in [first, second] {
            match err {
                HarnessError::StartFailed {
                    server, message, ..
                } => {
                    assert_eq!(server, Server::Mongo);
                    assert!(message.contains("/nowhere/jongodb"), "{message}");
                    assert!(message.contains("npm install"), "{message}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
