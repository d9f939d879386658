//! Dotted field paths (`healthevent.nodename`), validated before any backend sees them.

use std::fmt;

use crate::error::{Error, Result};
use crate::value::{CREATED_AT_FIELD, ID_FIELD};

/// Longest accepted path, in segments.
pub const MAX_SEGMENTS: usize = 32;

/// Most segments after the first that may be array indexes (`a.0.b.1`), each of which a
/// backend may have to resolve two ways (see [`values_at`](crate::value::values_at)).
pub const MAX_INDEX_SEGMENTS: usize = 4;

/// Why a reserved top-level name is refused (for messages).
pub(crate) const RESERVED_WHY: &str =
    "top-level names starting with '_' (other than _id) are reserved for the datastore";

/// True for a top-level field name the datastore keeps for itself: any name starting with `_`
/// except `_id`.
pub fn is_reserved_name(name: &str) -> bool {
    name.starts_with('_') && name != ID_FIELD
}

/// A validated dotted path into a document.
///
/// Segments are non-empty, contain no NUL, and do not start with `$`. A first segment that
/// starts with `_` other than `_id` is reserved for the datastore (MongoDB keeps idempotency
/// keys in `_idempotencyKey`), so no filter, sort or update can see or write such fields.
/// ```
/// use datastore_api::FieldPath;
/// let p = FieldPath::parse("healthevent.nodename").unwrap();
/// assert_eq!(p.segments(), ["healthevent", "nodename"]);
/// assert!(FieldPath::parse("a..b").is_err());
/// assert!(FieldPath::parse("_idempotencyKey").is_err());
/// assert!(FieldPath::parse("a._b").is_ok());
/// assert!(FieldPath::parse("a.0.b.1").is_ok()); // array indexes, as MongoDB reads them
/// assert!(FieldPath::parse("a.0.1.2.3.4").is_err()); // more than MAX_INDEX_SEGMENTS
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    dotted: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses and validates a dotted path.
    pub fn parse(path: &str) -> Result<Self> {
        let invalid =
            |why: &str| Error::invalid_input(format!("invalid field path {path:?}: {why}"));
        if path.is_empty() {
            return Err(invalid("it is empty"));
        }
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if segments.len() > MAX_SEGMENTS {
            return Err(invalid("too many segments"));
        }
        for s in &segments {
            if s.is_empty() {
                return Err(invalid("a segment is empty"));
            }
            if s.starts_with('$') {
                return Err(invalid("a segment starts with '$'"));
            }
            if s.contains('\0') {
                return Err(invalid("it contains a NUL character"));
            }
        }
        if is_reserved_name(&segments[0]) {
            return Err(invalid(RESERVED_WHY));
        }
        let indexes = segments[1..]
            .iter()
            .filter(|s| crate::value::array_index(s).is_some())
            .count();
        if indexes > MAX_INDEX_SEGMENTS {
            return Err(invalid(&format!(
                "more than {MAX_INDEX_SEGMENTS} array-index segments"
            )));
        }
        Ok(FieldPath {
            dotted: path.to_owned(),
            segments,
        })
    }

    /// The segments in order.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.dotted
    }

    /// Which reserved top-level field the path starts at, if any.
    pub fn reserved_root(&self) -> Option<ReservedField> {
        match self.segments[0].as_str() {
            ID_FIELD => Some(ReservedField::Id),
            CREATED_AT_FIELD => Some(ReservedField::CreatedAt),
            _ => None,
        }
    }

    /// True when `self` equals `other` or is one of its ancestors.
    pub fn is_prefix_of(&self, other: &FieldPath) -> bool {
        other.segments.len() >= self.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a == b)
    }
}

/// The top-level fields that every stored document has and that backends keep outside the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedField {
    /// `_id`, the document id (a string).
    Id,
    /// `createdAt`, the server-assigned insert time (a date).
    CreatedAt,
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dotted)
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({:?})", self.dotted)
    }
}
