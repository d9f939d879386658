//! What change-stream failures mean: no `$changeStream`, a lost history, a missing pre-image,
//! an interrupted cursor.

use datastore_api::{Error, ErrorKind};

use crate::error::{code_of, map_err, HISTORY_LOST_CODES};

/// Server codes meaning "this server cannot run `$changeStream`": the stage is only supported
/// on replica sets (40573), unrecognized pipeline stage (40324), CommandNotSupported (115),
/// CommandNotFound (59).
const UNSUPPORTED_CODES: &[i32] = &[40_573, 40_324, 115, 59];

/// NoMatchingDocument: with `fullDocumentBeforeChange: "required"`, the pre-image of an event is
/// missing.
const NO_MATCHING_DOCUMENT: i32 = 47;

/// CursorNotFound: the server-side cursor is gone (a resumable change-stream error).
const CURSOR_NOT_FOUND: i32 = 43;

/// What a change-stream failure means beyond [`map_err`]'s general mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamFailure {
    /// The server has no `$changeStream` (not a replica set, or a stand-in).
    Unsupported,
    /// The position is older than the oplog.
    HistoryLost,
    /// A required pre- or post-image is gone.
    ImageMissing,
}

fn classify(code: Option<i32>, message: &str) -> Option<StreamFailure> {
    let m = message.to_ascii_lowercase();
    let in_code = |codes: &[i32]| code.is_some_and(|c| codes.contains(&c));
    if in_code(HISTORY_LOST_CODES) {
        Some(StreamFailure::HistoryLost)
    } else if in_code(UNSUPPORTED_CODES) {
        Some(StreamFailure::Unsupported)
    } else if code == Some(NO_MATCHING_DOCUMENT)
        && (m.contains("pre-image") || m.contains("post-image"))
    {
        Some(StreamFailure::ImageMissing)
    } else if m.contains("resume point may no longer be in the oplog") {
        Some(StreamFailure::HistoryLost)
    } else if m.contains("$changestream")
        && [
            "unrecognized",
            "unknown",
            "not supported",
            "unsupported",
            "only supported",
            "not implemented",
        ]
        .iter()
        .any(|w| m.contains(w))
    {
        // Other servers and stand-ins, e.g. "unsupported aggregation stage: $changeStream"
        // (NotImplemented, 238).
        Some(StreamFailure::Unsupported)
    } else {
        None
    }
}

/// Maps an error of opening or reading a change stream.
pub(super) fn stream_error(e: mongodb::error::Error, consumer: &str) -> Error {
    let message = match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => c.message.clone(),
        other => other.to_string(),
    };
    match classify(code_of(&e), &message) {
        Some(StreamFailure::Unsupported) => Error::new(
            ErrorKind::Unsupported,
            "this MongoDB server does not support change streams (needs a replica set)",
        )
        .with_source(e),
        Some(StreamFailure::HistoryLost) => Error::new(
            ErrorKind::HistoryLost,
            format!(
                "consumer {consumer:?}: its position is older than the retained change history (the oplog)"
            ),
        )
        .with_source(e),
        Some(StreamFailure::ImageMissing) => Error::new(
            ErrorKind::HistoryLost,
            format!(
                "consumer {consumer:?}: the pre-image of a change is no longer available (pre-images \
                 expired, or were not enabled when the change was written)"
            ),
        )
        .with_source(e),
        None => {
            // CursorNotFound and labelled errors are worth reopening for even if the driver's
            // one automatic resume failed.
            let resumable = code_of(&e) == Some(CURSOR_NOT_FOUND)
                || e.contains_label("ResumableChangeStreamError");
            let mapped = map_err(e);
            if resumable && mapped.is_permanent_backend() {
                Error::transient(format!("change stream interrupted: {}", mapped.message()))
            } else {
                mapped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        use StreamFailure::*;
        let lost = "Resume of change stream was not possible, as the resume point may no longer be in the oplog.";
        assert_eq!(classify(Some(286), lost), Some(HistoryLost));
        assert_eq!(
            classify(Some(260), "Invalid resume token"),
            Some(HistoryLost)
        );
        assert_eq!(classify(Some(280), "fatal"), Some(HistoryLost));
        assert_eq!(classify(Some(40_576), lost), Some(HistoryLost));
        assert_eq!(classify(None, lost), Some(HistoryLost));
        assert_eq!(
            classify(
                Some(40_573),
                "The $changeStream stage is only supported on replica sets"
            ),
            Some(Unsupported)
        );
        assert_eq!(
            classify(
                Some(40_324),
                "Unrecognized pipeline stage name: '$changeStream'"
            ),
            Some(Unsupported)
        );
        assert_eq!(classify(Some(59), "no such command"), Some(Unsupported));
        assert_eq!(
            classify(Some(2), "unsupported aggregation stage: $changeStream"),
            Some(Unsupported)
        );
        assert_eq!(
            classify(
                Some(47),
                "Change stream was configured to require a post-image for all update events, but the post-image was not found for event: {...}"
            ),
            Some(ImageMissing)
        );
        assert_eq!(
            classify(
                Some(47),
                "Change stream was configured to require a pre-image for all update, delete and replace events, but the pre-image was not found for event: {...}"
            ),
            Some(ImageMissing)
        );
        assert_eq!(
            classify(
                Some(238),
                "unsupported aggregation stage: $changeStream [feature=aggregation.stage.$changeStream]"
            ),
            Some(Unsupported)
        );
        // Codes decide before words.
        assert_eq!(
            classify(Some(286), "unknown $changeStream resume point"),
            Some(HistoryLost)
        );
        assert_eq!(classify(Some(47), "no matching document"), None);
        assert_eq!(
            classify(Some(2), "change stream not supported for this option"),
            None
        );
        assert_eq!(classify(Some(11_600), "interrupted at shutdown"), None);
    }
}
