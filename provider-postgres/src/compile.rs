//! Compiles lowered filters and sorts to SQL. Every value is a bound parameter: field paths
//! become bound `jsonpath` or `text[]` values, never SQL text.

use datastore_api::{CmpOp, Direction, FieldPath, Lowered, ReservedField, Scalar};
use sqlx::{Postgres, QueryBuilder};

use datastore_api::value::{array_index, format_date};
use datastore_api::Result;

/// What a filter applies to: a JSONB expression, and whether `_id`/`createdAt` are the columns
/// `id`/`created_at` (stored documents) or ordinary paths (change-event documents).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub doc: &'static str,
    pub reserved_columns: bool,
}

/// Stored documents: body in `document`, `_id`/`createdAt` in columns.
pub(crate) const DOCUMENTS: Target = Target {
    doc: "document",
    reserved_columns: true,
};

/// Appends the SQL of `filter` (a boolean expression over `id`, `created_at`, `document`).
pub(crate) fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, filter: &Lowered) -> Result<()> {
    push_filter_on(qb, filter, DOCUMENTS)
}

/// Appends the SQL of `filter` applied to `target`.
pub(crate) fn push_filter_on(
    qb: &mut QueryBuilder<'_, Postgres>,
    filter: &Lowered,
    target: Target,
) -> Result<()> {
    match filter {
        Lowered::True => {
            qb.push("TRUE");
        }
        Lowered::False => {
            qb.push("FALSE");
        }
        Lowered::Cmp { path, op, value } => push_cmp(qb, path, *op, value, target)?,
        Lowered::NullOrMissing(path) => match reserved_in(path, target) {
            Some((_, true)) => {
                qb.push("FALSE");
            }
            Some((_, false)) => {
                qb.push("TRUE");
            }
            None => {
                let paths = jsonpaths(path, None);
                let nulls = paths.iter().map(|p| format!("{p} ? (@ == null)")).collect();
                qb.push("(NOT (");
                push_path_exists(qb, target, paths);
                qb.push(") OR ");
                push_path_exists(qb, target, nulls);
                qb.push(")");
            }
        },
        Lowered::ExprCmp { path, op, value } => push_expr_cmp(qb, path, *op, value, target),
        Lowered::EqValue { path, value } => match reserved_in(path, target) {
            // The id string and the createdAt date are never arrays or documents.
            Some(_) => {
                qb.push("FALSE");
            }
            None => {
                // Every value the path reaches (lax mode walks arrays on the way), equal as a
                // whole or holding an equal element; JSONB equality compares numbers by value.
                qb.push("EXISTS (SELECT 1 FROM unnest(");
                qb.push_bind(jsonpaths(path, None));
                qb.push(format!(
                    "::jsonpath[]) p, jsonb_path_query({}, p) v WHERE v = ",
                    target.doc
                ));
                qb.push_bind(value.clone());
                qb.push("::jsonb OR (jsonb_typeof(v) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements(v) e WHERE e = ");
                qb.push_bind(value.clone());
                qb.push("::jsonb)))");
            }
        },
        Lowered::Exists(path) => match reserved_in(path, target) {
            Some((_, top)) => {
                qb.push(if top { "TRUE" } else { "FALSE" });
            }
            None => push_path_exists(qb, target, jsonpaths(path, None)),
        },
        Lowered::Not(inner) => {
            // IS NOT TRUE turns an unknown (NULL) result into a match of the negation.
            qb.push("((");
            push_filter_on(qb, inner, target)?;
            qb.push(") IS NOT TRUE)");
        }
        Lowered::Or(parts)
            if parts.iter().filter(|p| is_document_eq(p, target)).count() > ANY_THRESHOLD =>
        {
            push_large_or(qb, parts, target)?;
        }
        Lowered::And(parts) | Lowered::Or(parts) => {
            let sep = if matches!(filter, Lowered::And(_)) {
                " AND "
            } else {
                " OR "
            };
            qb.push("(");
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    qb.push(sep);
                }
                push_filter_on(qb, p, target)?;
            }
            qb.push(")");
        }
    }
    Ok(())
}

/// From how many equalities on an `Or` (a large `In`) they are compiled to one bound array:
/// `document @? ANY($1::jsonpath[])`, one parameter whatever the count (PostgreSQL takes at
/// most 65,535), still answered from the GIN index by a bitmap scan over the array.
const ANY_THRESHOLD: usize = 32;

/// True for an equality on a document path (not the `_id`/`createdAt` columns).
fn is_document_eq(part: &Lowered, target: Target) -> bool {
    matches!(part, Lowered::Cmp { path, op: CmpOp::Eq, value }
        if reserved_in(path, target).is_none() && !matches!(value, Scalar::Null))
}

/// A large `Or`: its document equalities as one `@? ANY(array)`, the rest as usual.
fn push_large_or(
    qb: &mut QueryBuilder<'_, Postgres>,
    parts: &[Lowered],
    target: Target,
) -> Result<()> {
    let mut paths = Vec::with_capacity(parts.len());
    let mut others = Vec::new();
    for part in parts {
        match part {
            Lowered::Cmp { path, op, value } if is_document_eq(part, target) => {
                paths.extend(cmp_jsonpaths(path, *op, value)?);
            }
            _ => others.push(part),
        }
    }
    qb.push(format!("({} @? ANY(", target.doc));
    qb.push_bind(paths);
    qb.push("::jsonpath[])");
    for part in others {
        qb.push(" OR ");
        push_filter_on(qb, part, target)?;
    }
    qb.push(")");
    Ok(())
}

/// `Some((field, is_the_field_itself))` for paths under `_id` / `createdAt`.
fn reserved(path: &FieldPath) -> Option<(ReservedField, bool)> {
    path.reserved_root()
        .map(|r| (r, path.segments().len() == 1))
}

fn reserved_in(path: &FieldPath, target: Target) -> Option<(ReservedField, bool)> {
    if target.reserved_columns {
        reserved(path)
    } else {
        None
    }
}

fn sql_op(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => " = ",
        CmpOp::Gt => " > ",
        CmpOp::Gte => " >= ",
        CmpOp::Lt => " < ",
        CmpOp::Lte => " <= ",
    }
}

fn push_cmp(
    qb: &mut QueryBuilder<'_, Postgres>,
    path: &FieldPath,
    op: CmpOp,
    value: &Scalar,
    target: Target,
) -> Result<()> {
    match (reserved_in(path, target), value) {
        (Some((ReservedField::Id, true)), Scalar::String(s)) => {
            qb.push("id").push(sql_op(op)).push_bind(s.clone());
        }
        (Some((ReservedField::CreatedAt, true)), Scalar::Date(t)) => {
            qb.push("created_at").push(sql_op(op)).push_bind(*t);
        }
        // Other types never match the id string or the createdAt date; sub-paths are missing.
        (Some(_), _) => {
            qb.push("FALSE");
        }
        (None, value) => push_path_exists(qb, target, cmp_jsonpaths(path, op, value)?),
    }
    Ok(())
}

/// The paths migration 0005 indexes `datastore_expr_number` on. A comparison on one of them
/// names the path as a literal (this code's constant, never input) so that the planner matches
/// the index expression; any other path is a bound parameter.
const INDEXED_EXPR_PATHS: &[(&str, &str)] = &[(
    "healthevent.generatedtimestamp.seconds",
    "'{healthevent,generatedtimestamp,seconds}'::text[]",
)];

/// `Lowered::ExprCmp`: `datastore_expr_number(doc, path) <op> value`, where the function
/// (migration 0005) maps what an expression reads to a number ordered as BSON orders it
/// against numbers. The `_id` string and the `createdAt` date sort after every number; a path
/// below them is missing, before every number.
fn push_expr_cmp(
    qb: &mut QueryBuilder<'_, Postgres>,
    path: &FieldPath,
    op: CmpOp,
    value: &Scalar,
    target: Target,
) {
    if let Some((_, top)) = reserved_in(path, target) {
        let order = if top {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Less
        };
        qb.push(if op.accepts(order) { "TRUE" } else { "FALSE" });
        return;
    }
    qb.push(format!("datastore_expr_number({}, ", target.doc));
    match INDEXED_EXPR_PATHS.iter().find(|(p, _)| *p == path.as_str()) {
        Some((_, literal)) => {
            qb.push(*literal);
        }
        None => {
            qb.push_bind(path.segments().to_vec());
            qb.push("::text[]");
        }
    }
    let number = match value {
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => float_literal(*f),
        // Lowering admits numbers only.
        _ => "NaN".to_owned(),
    };
    qb.push(")")
        .push(sql_op(op))
        .push_bind(number)
        .push("::numeric");
}

/// Appends `doc @? $n::jsonpath` for one path, `doc @? ANY($n::jsonpath[])` for several: true
/// when any of them finds an item.
fn push_path_exists(qb: &mut QueryBuilder<'_, Postgres>, target: Target, mut paths: Vec<String>) {
    qb.push(format!("{} @? ", target.doc));
    if paths.len() == 1 {
        qb.push_bind(paths.pop().unwrap_or_default());
        qb.push("::jsonpath");
    } else {
        qb.push("ANY(");
        qb.push_bind(paths);
        qb.push("::jsonpath[])");
    }
}

/// The jsonpath predicates of `path op value`, one per way of resolving the path (see
/// [`jsonpaths`]; lax: arrays match if an element does).
fn cmp_jsonpaths(path: &FieldPath, op: CmpOp, value: &Scalar) -> Result<Vec<String>> {
    let (suffix, literal) = match value {
        Scalar::Date(t) => (Some("$date"), json_string(&format_date(*t)?)),
        Scalar::String(s) => (None, json_string(s)),
        Scalar::Int(i) => (None, i.to_string()),
        Scalar::Float(f) => (None, float_literal(*f)),
        Scalar::Bool(b) => (None, b.to_string()),
        // Lowering turns null comparisons into NullOrMissing; never matched here.
        Scalar::Null => (None, "null".to_owned()),
    };
    Ok(jsonpaths(path, suffix)
        .into_iter()
        .map(|p| format!("{p} ? (@ {} {literal})", op.symbol()))
        .collect())
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn float_literal(f: f64) -> String {
    // serde_json prints the shortest round-tripping form (`1.5`, `1e300`); jsonpath reads both.
    serde_json::Number::from_f64(f).map_or_else(|| "0".to_owned(), |n| n.to_string())
}

/// The lax jsonpaths that together reach what MongoDB's resolution of `path` reaches
/// ([`values_at`](datastore_api::value::values_at)): a segment that is an array index (`a.0`)
/// means the key `"0"` (of an object, or of the objects in an array, which lax mode enters) or,
/// when the value before it is an array, that element. One path per combination; a path
/// without index segments gives one: `$."a"."b"`, every key quoted.
pub(crate) fn jsonpaths(path: &FieldPath, suffix: Option<&str>) -> Vec<String> {
    let segs = path.segments();
    let indexes: Vec<usize> = (1..segs.len())
        .filter(|&j| array_index(&segs[j]).is_some())
        .collect();
    let mut out = Vec::with_capacity(1 << indexes.len());
    'combos: for combo in 0u32..(1 << indexes.len()) {
        let as_index = |j: usize| {
            indexes
                .iter()
                .position(|&k| k == j)
                .is_some_and(|bit| combo & (1 << bit) != 0)
        };
        let mut s = String::from("$");
        let mut last_key_at = 0;
        for (j, seg) in segs.iter().enumerate() {
            match array_index(seg).filter(|_| as_index(j)) {
                Some(i) => {
                    // Documents hold no arrays directly in arrays: an index after an index
                    // reaches nothing. (Index segments start at the second, so `j >= 1`.)
                    if as_index(j - 1) {
                        continue 'combos;
                    }
                    // `type()` is the one method lax mode does not unwrap arrays for: keep the
                    // parent only when the value at the previous key is an array.
                    let key = s.split_off(last_key_at);
                    s.push_str(&format!(" ? (@{key}.type() == \"array\"){key}[{i}]"));
                }
                None => {
                    last_key_at = s.len();
                    s.push('.');
                    s.push_str(&json_string(seg));
                }
            }
        }
        if let Some(seg) = suffix {
            s.push('.');
            s.push_str(&json_string(seg));
        }
        out.push(s);
    }
    out
}

/// Appends `, LATERAL (…) k` binding each sort key's value, for use in the FROM clause.
pub(crate) fn push_sort_lateral(
    qb: &mut QueryBuilder<'_, Postgres>,
    keys: &[(FieldPath, Direction)],
) {
    let mut first = true;
    for (i, (path, _)) in keys.iter().enumerate() {
        if path.reserved_root().is_some() {
            continue;
        }
        qb.push(if first {
            " CROSS JOIN LATERAL (SELECT "
        } else {
            ", "
        });
        first = false;
        qb.push("document #> ");
        qb.push_bind(path.segments().to_vec());
        qb.push(format!("::text[] AS k{i}"));
    }
    if !first {
        qb.push(") k");
    }
}

/// Appends `ORDER BY …` for the keys (MongoDB's type brackets), ending with `id ASC`.
pub(crate) fn push_order_by(qb: &mut QueryBuilder<'_, Postgres>, keys: &[(FieldPath, Direction)]) {
    qb.push(" ORDER BY ");
    for (i, (path, dir)) in keys.iter().enumerate() {
        let d = match dir {
            Direction::Ascending => " ASC",
            Direction::Descending => " DESC",
        };
        match reserved(path) {
            Some((ReservedField::Id, true)) => {
                qb.push(format!("id{d}, "));
            }
            Some((ReservedField::CreatedAt, true)) => {
                qb.push(format!("created_at{d}, "));
            }
            Some(_) => {}
            None => {
                let v = format!("k.k{i}");
                qb.push(format!(
                    "CASE WHEN {v} IS NULL THEN 1 ELSE CASE jsonb_typeof({v}) WHEN 'null' THEN 1 WHEN 'number' THEN 2 \
                     WHEN 'string' THEN 3 WHEN 'object' THEN CASE WHEN {v} ? '$date' THEN 9 ELSE 4 END \
                     WHEN 'array' THEN 5 WHEN 'boolean' THEN 8 END END{d}, \
                     CASE WHEN jsonb_typeof({v}) = 'number' THEN ({v})::numeric END{d}, \
                     (CASE WHEN jsonb_typeof({v}) IN ('string', 'boolean') THEN {v} #>> '{{}}' END) COLLATE \"C\"{d}, \
                     (CASE WHEN jsonb_typeof({v}) = 'object' THEN {v} ->> '$date' END) COLLATE \"C\"{d}, "
                ));
            }
        }
    }
    qb.push("id ASC");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_quotes_every_key() {
        let p = FieldPath::parse("a.b c.\"q\"").unwrap();
        assert_eq!(jsonpaths(&p, None), [r#"$."a"."b c"."\"q\"""#]);
        assert_eq!(
            jsonpaths(&FieldPath::parse("t").unwrap(), Some("$date")),
            [r#"$."t"."$date""#]
        );
    }

    #[test]
    fn index_segments_resolve_both_ways() {
        let p = FieldPath::parse("a.0.b").unwrap();
        assert_eq!(
            jsonpaths(&p, None),
            [
                r#"$."a"."0"."b""#,
                r#"$ ? (@."a".type() == "array")."a"[0]."b""#
            ]
        );
        let p = FieldPath::parse("x.a.1").unwrap();
        assert_eq!(
            jsonpaths(&p, Some("$date")),
            [
                r#"$."x"."a"."1"."$date""#,
                r#"$."x" ? (@."a".type() == "array")."a"[1]."$date""#
            ]
        );
        // A first segment is always a key; "01" is a key, not an index.
        assert_eq!(jsonpaths(&FieldPath::parse("0.01").unwrap(), None).len(), 1);
    }

    #[test]
    fn large_in_lists_bind_one_array() {
        let values: Vec<i64> = (0..1_000).collect();
        let f = datastore_api::Filter::is_in("a.b", values).lower().unwrap();
        let mut qb = QueryBuilder::<Postgres>::new("SELECT 1 WHERE ");
        push_filter(&mut qb, &f).unwrap();
        assert_eq!(qb.sql(), "SELECT 1 WHERE (document @? ANY($1::jsonpath[]))");
    }

    #[test]
    fn values_are_bound_not_inlined_in_sql() {
        let f = datastore_api::Filter::eq("a", "x'; DROP TABLE t; --")
            .lower()
            .unwrap();
        let mut qb = QueryBuilder::<Postgres>::new("SELECT 1 WHERE ");
        push_filter(&mut qb, &f).unwrap();
        assert_eq!(qb.sql(), "SELECT 1 WHERE document @? $1::jsonpath");
    }
}
