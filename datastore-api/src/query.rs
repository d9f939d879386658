//! Options and results of store operations: sorting, limits, keyset pages, counts.

use chrono::{DateTime, TimeZone, Utc};

use crate::error::{Error, Result};
use crate::path::FieldPath;
use crate::value::{sort_compare, Document, DocumentId, Value, ID_FIELD};

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Smallest first.
    #[default]
    Ascending,
    /// Largest first.
    Descending,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// Field path (validated when the query runs).
    pub path: String,
    /// Direction.
    pub direction: Direction,
}

/// Sort order: keys in priority order. Values order by type bracket first
/// (see [`crate::value::sort_compare`]); a missing field sorts as `null`. Ties are
/// always broken by `_id` ascending, so every sort is total and repeatable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sort {
    /// The keys.
    pub keys: Vec<SortKey>,
}

impl Sort {
    /// Ascending by `path`.
    pub fn asc(path: impl Into<String>) -> Self {
        Sort::default().then_asc(path)
    }
    /// Descending by `path`.
    pub fn desc(path: impl Into<String>) -> Self {
        Sort::default().then_desc(path)
    }
    /// Adds an ascending key.
    pub fn then_asc(mut self, path: impl Into<String>) -> Self {
        self.keys.push(SortKey {
            path: path.into(),
            direction: Direction::Ascending,
        });
        self
    }
    /// Adds a descending key.
    pub fn then_desc(mut self, path: impl Into<String>) -> Self {
        self.keys.push(SortKey {
            path: path.into(),
            direction: Direction::Descending,
        });
        self
    }
    /// Newest first: `createdAt` descending, then `_id` descending.
    pub fn newest_first() -> Self {
        Sort::desc(crate::value::CREATED_AT_FIELD).then_desc(crate::value::ID_FIELD)
    }
    /// Validates the key paths. Sort keys do not index into arrays, so all-digit segments are
    /// rejected.
    pub fn validate(&self) -> Result<Vec<(FieldPath, Direction)>> {
        self.keys
            .iter()
            .map(|k| {
                let path = FieldPath::parse(&k.path)?;
                if path
                    .segments()
                    .iter()
                    .any(|s| s.bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(Error::invalid_input(format!(
                        "sort key '{path}': numeric segments (array positions) are not supported"
                    )));
                }
                Ok((path, k.direction))
            })
            .collect()
    }
}

/// Options of [`Collection::find`](crate::Collection::find).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindOptions {
    /// Sort order (default: `_id` ascending).
    pub sort: Sort,
    /// Skip this many matches first.
    pub skip: u64,
    /// Return at most this many (none: all).
    pub limit: Option<u64>,
}

impl FindOptions {
    /// Sorted by `sort`.
    pub fn sorted(sort: Sort) -> Self {
        FindOptions {
            sort,
            ..Default::default()
        }
    }
    /// With a limit.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }
    /// With a skip.
    pub fn skip(mut self, skip: u64) -> Self {
        self.skip = skip;
        self
    }
}

/// Largest accepted page or batch size.
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// A keyset page request over `(createdAt, _id)`.
///
/// Walking pages with the returned [`Page::next`] token returns every document that matched
/// throughout the walk and was committed before it began exactly once, and never returns a
/// document twice, however documents are inserted, updated or deleted meanwhile (there is no
/// OFFSET: positions are keys, which never change).
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    /// Order of the walk.
    pub direction: Direction,
    /// Documents per page (1..=[`MAX_PAGE_SIZE`]).
    pub size: u32,
    /// Continue after this token (from the previous page); `None` starts at the beginning.
    pub after: Option<PageToken>,
}

impl PageRequest {
    /// The first page, oldest first.
    pub fn first(size: u32) -> Self {
        PageRequest {
            direction: Direction::Ascending,
            size,
            after: None,
        }
    }
    /// Checks the size.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || self.size > MAX_PAGE_SIZE {
            return Err(Error::invalid_input(format!(
                "page size {} is outside 1..={MAX_PAGE_SIZE}",
                self.size
            )));
        }
        Ok(())
    }
}

/// A page of documents and the position after its last document.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The documents, in the requested order.
    pub documents: Vec<Document>,
    /// Where the next page starts; `None` when this page was the last.
    pub next: Option<PageToken>,
}

/// A position in a keyset walk: the last document returned. Pass it back unchanged; use
/// [`encode`](PageToken::encode)/[`decode`](PageToken::decode) to carry it as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// `createdAt` of the last document returned.
    pub created_at: DateTime<Utc>,
    /// `_id` of the last document returned.
    pub id: DocumentId,
}

impl PageToken {
    /// Serializes the token for transport (`<millis>:<id>`).
    pub fn encode(&self) -> String {
        format!("{}:{}", self.created_at.timestamp_millis(), self.id)
    }
    /// Parses a token produced by [`encode`](Self::encode).
    pub fn decode(s: &str) -> Result<Self> {
        let bad = || Error::invalid_input(format!("malformed page token {s:?}"));
        let (ms, id) = s.split_once(':').ok_or_else(bad)?;
        let ms: i64 = ms.parse().map_err(|_| bad())?;
        let created_at = Utc.timestamp_millis_opt(ms).single().ok_or_else(bad)?;
        Ok(PageToken {
            created_at,
            id: DocumentId::parse(id)?,
        })
    }
}

/// Result of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateResult {
    /// Documents that matched the filter.
    pub matched: u64,
    /// Documents that actually changed.
    pub modified: u64,
}

/// What an insert assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The document id.
    pub id: DocumentId,
    /// The server-assigned insert time (millisecond precision).
    pub created_at: DateTime<Utc>,
}

/// A document with its idempotency key, for [`Collection::insert_idempotent`](crate::Collection::insert_idempotent).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedDocument {
    /// The idempotency key (non-empty, at most 512 bytes).
    pub key: String,
    /// The document.
    pub document: Document,
}

/// Outcome of one document of an idempotent insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotentOutcome {
    /// Newly inserted.
    Inserted(Inserted),
    /// The key already existed (stored earlier, or earlier in the same batch); nothing was
    /// written. Holds the id of the document that owns the key.
    Duplicate(DocumentId),
}

impl IdempotentOutcome {
    /// True for [`IdempotentOutcome::Duplicate`].
    pub fn is_duplicate(&self) -> bool {
        matches!(self, IdempotentOutcome::Duplicate(_))
    }
}

/// Checks an idempotency key.
pub fn validate_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 512 || key.contains('\0') {
        return Err(Error::invalid_input(
            "idempotency keys must be 1 to 512 bytes without NUL",
        ));
    }
    Ok(())
}

/// The value a sort key orders by: the path is followed through objects only (an array on the
/// way means "missing"), as every provider sorts.
pub fn sort_value<'a>(doc: &'a Document, path: &FieldPath) -> Option<&'a Value> {
    let (first, rest) = path.segments().split_first()?;
    let mut cur = doc.get(first)?;
    for seg in rest {
        match cur {
            Value::Object(o) => cur = o.get(seg)?,
            _ => return None,
        }
    }
    Some(cur)
}

/// Orders documents by the sort keys ([`sort_compare`] on [`sort_value`]), then by `_id`
/// ascending: the order every provider returns for [`FindOptions::sort`].
pub fn sort_documents(docs: &mut [Document], keys: &[(FieldPath, Direction)]) {
    fn id_of(d: &Document) -> &[u8] {
        d.get(ID_FIELD)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .as_bytes()
    }
    docs.sort_by(|a, b| {
        for (path, dir) in keys {
            let o = sort_compare(sort_value(a, path), sort_value(b, path));
            let o = if *dir == Direction::Descending {
                o.reverse()
            } else {
                o
            };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        id_of(a).cmp(id_of(b))
    });
}
