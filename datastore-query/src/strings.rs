//! String expressions whose rules are their own: `$toString`'s formatting (shared with
//! `$substr`'s coercion), `$substrBytes` / `$substrCP`, and `$regexMatch`.

use std::sync::Arc;

use regex::Regex;

use super::expr::type_name;
use datastore_api::error::{Error, Result};
use datastore_api::value::{as_date, Value};

/// A value as MongoDB's `coerceToString` prints it: doubles without a trailing `.0`, dates in
/// ISO 8601 with milliseconds; `None` for the types it refuses (documents, arrays, booleans).
pub(crate) fn printed(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => f.to_string(),
            (None, None) => n.to_string(),
        },
        v => as_date(v)?.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    })
}

/// `$toString`: null and missing are null; booleans print too.
pub(crate) fn to_string(v: Option<&Value>) -> Result<Option<Value>> {
    Ok(Some(match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Bool(b)) => Value::String(b.to_string()),
        Some(v) => Value::String(printed(v).ok_or_else(|| {
            Error::invalid_input(format!("$toString requires a scalar, got {}", type_name(v)))
        })?),
    }))
}

/// `$substr` / `$substrBytes` (`code_points` false) and `$substrCP`: the input coerced to a
/// string (null and missing are `""`), a start and a length; a negative length means "to the
/// end" for bytes and is an error for code points, as is a negative start for both.
pub(crate) fn substr(
    code_points: bool,
    input: Option<&Value>,
    start: Option<&Value>,
    length: Option<&Value>,
) -> Result<Option<Value>> {
    let name = if code_points {
        "$substrCP"
    } else {
        "$substrBytes"
    };
    let fail = |why: &str| Err(Error::invalid_input(format!("{name}: {why}")));
    let s = match input {
        None | Some(Value::Null) => String::new(),
        Some(v) => match printed(v) {
            Some(s) => s,
            None => return fail(&format!("can't convert from {} to a string", type_name(v))),
        },
    };
    let integer = |v: Option<&Value>, what: &str| -> Result<i64> {
        match v {
            Some(Value::Number(n)) => Ok(n
                .as_i64()
                .unwrap_or_else(|| n.as_f64().unwrap_or(0.0).trunc() as i64)),
            _ => Err(Error::invalid_input(format!(
                "{name}: {what} must be a numeric type"
            ))),
        }
    };
    // `$substrCP` wants integral numbers; `$substrBytes` truncates.
    if code_points {
        for (v, what) in [(start, "starting index"), (length, "length")] {
            if v.and_then(Value::as_f64).is_some_and(|f| f.fract() != 0.0) {
                return fail(&format!("{what} must be an integral value"));
            }
        }
    }
    let start = integer(start, "starting index")?;
    let length = integer(length, "length")?;
    if start < 0 {
        return fail("starting index must be non-negative");
    }
    let out = if code_points {
        if length < 0 {
            return fail("length must be non-negative");
        }
        s.chars()
            .skip(start as usize)
            .take(length as usize)
            .collect()
    } else {
        let bytes = s.as_bytes();
        let lo = (start as usize).min(bytes.len());
        let hi = if length < 0 {
            bytes.len()
        } else {
            lo.saturating_add(length as usize).min(bytes.len())
        };
        if !s.is_char_boundary(lo) {
            return fail("invalid range, starting index is a UTF-8 continuation byte");
        }
        if !s.is_char_boundary(hi) {
            return fail("invalid range, ending index is in the middle of a UTF-8 character");
        }
        s[lo..hi].to_owned()
    };
    Ok(Some(Value::String(out)))
}

/// A compiled `$regexMatch` pattern (compared by its source).
#[derive(Debug, Clone)]
pub(crate) struct Compiled(Arc<Regex>);

impl PartialEq for Compiled {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// Compiles `pattern` with MongoDB's regex `options` (`i m s x`); `None` when either is
/// null or missing (then `$regexMatch` is false).
pub(crate) fn compile(
    pattern: Option<&Value>,
    options: Option<&Value>,
) -> Result<Option<Compiled>> {
    let fail = |why: String| Err(Error::invalid_input(format!("$regexMatch: {why}")));
    let pattern = match pattern {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(p)) => p,
        Some(v) => return fail(format!("'regex' must be a string, got {}", type_name(v))),
    };
    let flags = match options {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(o)) => o.clone(),
        Some(v) => return fail(format!("'options' must be a string, got {}", type_name(v))),
    };
    if let Some(c) = flags.chars().find(|c| !"imsx".contains(*c)) {
        return fail(format!(
            "invalid flag {c:?} in regex options (use i, m, s, x)"
        ));
    }
    let source = if flags.is_empty() {
        pattern.clone()
    } else {
        format!("(?{flags}){pattern}")
    };
    match Regex::new(&source) {
        Ok(r) => Ok(Some(Compiled(Arc::new(r)))),
        Err(e) => fail(format!(
            "{pattern:?} is not a regular expression this evaluator runs (no lookaround or \
             backreferences): {e}"
        )),
    }
}

/// `$regexMatch`: whether `input` (a string; null or missing is false) matches.
pub(crate) fn regex_match(
    input: Option<&Value>,
    regex: Option<&Compiled>,
) -> Result<Option<Value>> {
    let matched = match (input, regex) {
        (None | Some(Value::Null), _) | (_, None) => false,
        (Some(Value::String(s)), Some(r)) => r.0.is_match(s),
        (Some(v), _) => {
            return Err(Error::invalid_input(format!(
                "$regexMatch needs 'input' to be a string, got {}",
                type_name(v)
            )))
        }
    };
    Ok(Some(Value::Bool(matched)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sub(cp: bool, s: Value, a: i64, b: i64) -> Result<Option<Value>> {
        substr(cp, Some(&s), Some(&json!(a)), Some(&json!(b)))
    }

    #[test]
    fn substr_counts_bytes_or_code_points() {
        assert_eq!(sub(false, json!("héllo"), 0, 1).unwrap(), Some(json!("h")));
        assert!(sub(false, json!("héllo"), 2, 1).is_err());
        assert!(sub(false, json!("héllo"), 1, 1).is_err());
        assert_eq!(sub(false, json!("héllo"), 1, 2).unwrap(), Some(json!("é")));
        assert_eq!(sub(true, json!("héllo"), 1, 2).unwrap(), Some(json!("él")));
        assert_eq!(sub(false, json!("abc"), 1, -1).unwrap(), Some(json!("bc")));
        assert_eq!(sub(false, json!("abc"), 9, 2).unwrap(), Some(json!("")));
        assert_eq!(sub(false, json!(12.5), 0, 2).unwrap(), Some(json!("12")));
        assert!(sub(false, json!("abc"), -1, 2).is_err());
        assert!(sub(true, json!("abc"), 0, -1).is_err());
        assert!(sub(false, json!(true), 0, 1).is_err());
        assert_eq!(
            substr(false, None, Some(&json!(0)), Some(&json!(1))).unwrap(),
            Some(json!(""))
        );
    }

    #[test]
    fn regex_match_follows_mongodb() {
        let r = compile(Some(&json!("^xid-(13|31)$")), None).unwrap();
        assert_eq!(
            regex_match(Some(&json!("xid-13")), r.as_ref()).unwrap(),
            Some(json!(true))
        );
        assert_eq!(
            regex_match(Some(&json!("XID-13")), r.as_ref()).unwrap(),
            Some(json!(false))
        );
        let i = compile(Some(&json!("^xid")), Some(&json!("i"))).unwrap();
        assert_eq!(
            regex_match(Some(&json!("XID-13")), i.as_ref()).unwrap(),
            Some(json!(true))
        );
        assert_eq!(regex_match(None, i.as_ref()).unwrap(), Some(json!(false)));
        assert_eq!(
            regex_match(Some(&json!("x")), None).unwrap(),
            Some(json!(false))
        );
        assert!(regex_match(Some(&json!(5)), i.as_ref()).is_err());
        assert!(compile(Some(&json!("a")), Some(&json!("g"))).is_err());
        assert!(compile(Some(&json!("(?=a)")), None).is_err());
        assert!(compile(Some(&json!(5)), None).is_err());
    }
}
