//! Aggregation expressions, parsed once and evaluated per document with MongoDB's rules:
//! a missing field is "missing", not `null` (`$eq: ["$nope", null]` is false), numbers keep
//! integers while they fit, values of different types compare by BSON type order.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde_json::{Map, Number};

use super::strings::{self, Compiled};
use super::{bad, objects, Vars};
use datastore_api::error::{Error, Result};
use datastore_api::filter::{CmpOp, Filter, Scalar};
use datastore_api::path::FieldPath;
use datastore_api::value::{as_date, date_value, Value};
pub(crate) use datastore_api::value::{expr_compare as compare, expr_walk as walk};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// A constant.
    Literal(Value),
    /// `$a.b`: a path in the current document.
    Field(Vec<String>),
    /// `$$name.a.b`: a variable (`ROOT`, `CURRENT`, `NOW`, `this`, `value`, a `let` name).
    Var(String, Vec<String>),
    /// An array of expressions.
    Array(Vec<Expr>),
    /// A document of expressions.
    Object(Vec<(String, Expr)>),
    /// `{$op: args}`.
    Op(Op, Vec<Expr>),
    /// `$filter` / `$map`: input, the variable name, the per-element expression, and for
    /// `$filter` an optional limit (unused: `None`).
    Iterate {
        map: bool,
        input: Box<Expr>,
        var: String,
        body: Box<Expr>,
    },
    /// `$reduce`: input, initial value, body over `$$value` and `$$this`.
    Reduce {
        input: Box<Expr>,
        initial: Box<Expr>,
        body: Box<Expr>,
    },
    /// `$let`: variables and the body.
    Let {
        vars: Vec<(String, Expr)>,
        body: Box<Expr>,
    },
    /// `$switch`: branches and the default.
    Switch {
        branches: Vec<(Expr, Expr)>,
        default: Option<Box<Expr>>,
    },
    /// `$regexMatch`; the pattern is compiled once when it and the options are constant.
    RegexMatch {
        input: Box<Expr>,
        regex: Box<Expr>,
        options: Box<Expr>,
        compiled: Option<Compiled>,
    },
    /// `$getField`: a literal key of `input`.
    GetField { field: String, input: Box<Expr> },
}

/// Operators taking a list of evaluated arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    And,
    Or,
    Not,
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Cmp,
    Cond,
    IfNull,
    Add,
    Subtract,
    Multiply,
    Divide,
    Mod,
    Abs,
    ToLong,
    ToInt,
    ToDouble,
    ToString,
    ToBool,
    Size,
    ArrayElemAt,
    First,
    Last,
    In,
    ConcatArrays,
    SetUnion,
    SetIntersection,
    AnyElementTrue,
    AllElementsTrue,
    IsArray,
    Concat,
    ToLower,
    ToUpper,
    MergeObjects,
    Max,
    Min,
    Substr,
    SubstrCp,
    ObjectToArray,
    ArrayToObject,
}

impl Op {
    fn parse(name: &str) -> Option<(Op, Arity)> {
        use Arity::*;
        Some(match name {
            "$and" => (Op::And, Any),
            "$or" => (Op::Or, Any),
            "$not" => (Op::Not, Exactly(1)),
            "$eq" => (Op::Eq, Exactly(2)),
            "$ne" => (Op::Ne, Exactly(2)),
            "$gt" => (Op::Gt, Exactly(2)),
            "$gte" => (Op::Gte, Exactly(2)),
            "$lt" => (Op::Lt, Exactly(2)),
            "$lte" => (Op::Lte, Exactly(2)),
            "$cmp" => (Op::Cmp, Exactly(2)),
            "$cond" => (Op::Cond, Exactly(3)),
            "$ifNull" => (Op::IfNull, AtLeast(2)),
            "$add" => (Op::Add, Any),
            "$subtract" => (Op::Subtract, Exactly(2)),
            "$multiply" => (Op::Multiply, Any),
            "$divide" => (Op::Divide, Exactly(2)),
            "$mod" => (Op::Mod, Exactly(2)),
            "$abs" => (Op::Abs, Exactly(1)),
            "$toLong" => (Op::ToLong, Exactly(1)),
            "$toInt" => (Op::ToInt, Exactly(1)),
            "$toDouble" => (Op::ToDouble, Exactly(1)),
            "$toString" => (Op::ToString, Exactly(1)),
            "$toBool" => (Op::ToBool, Exactly(1)),
            "$size" => (Op::Size, Exactly(1)),
            "$arrayElemAt" => (Op::ArrayElemAt, Exactly(2)),
            "$first" => (Op::First, Exactly(1)),
            "$last" => (Op::Last, Exactly(1)),
            "$in" => (Op::In, Exactly(2)),
            "$concatArrays" => (Op::ConcatArrays, Any),
            "$setUnion" => (Op::SetUnion, Any),
            "$setIntersection" => (Op::SetIntersection, Any),
            "$anyElementTrue" => (Op::AnyElementTrue, Exactly(1)),
            "$allElementsTrue" => (Op::AllElementsTrue, Exactly(1)),
            "$isArray" => (Op::IsArray, Exactly(1)),
            "$concat" => (Op::Concat, Any),
            "$toLower" => (Op::ToLower, Exactly(1)),
            "$toUpper" => (Op::ToUpper, Exactly(1)),
            "$mergeObjects" => (Op::MergeObjects, Any),
            "$max" => (Op::Max, Any),
            "$min" => (Op::Min, Any),
            "$substr" | "$substrBytes" => (Op::Substr, Exactly(3)),
            "$substrCP" => (Op::SubstrCp, Exactly(3)),
            "$objectToArray" => (Op::ObjectToArray, Exactly(1)),
            "$arrayToObject" => (Op::ArrayToObject, Exactly(1)),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Arity {
    Any,
    Exactly(usize),
    AtLeast(usize),
}

/// Deepest accepted expression nesting.
const MAX_DEPTH: usize = 64;

impl Expr {
    /// Parses `v` as an expression; `at` names its place for errors.
    pub(crate) fn parse(v: &Value, at: &str) -> Result<Expr> {
        parse_at(v, at, 0)
    }

    /// The value of an expression that reads no document and no variable (`None` when it
    /// does, is missing, or fails).
    pub(crate) fn constant_value(&self) -> Option<Value> {
        if constant(self) {
            self.eval(&Value::Null, &Vars::constant()).ok().flatten()
        } else {
            None
        }
    }

    /// Evaluates against `doc` (the current document) with `vars`; `None` is "missing".
    pub(crate) fn eval(&self, doc: &Value, vars: &Vars) -> Result<Option<Value>> {
        super::limits::tick()?;
        Ok(match self {
            Expr::Literal(v) => Some(v.clone()),
            Expr::Field(path) => walk(Some(doc), path),
            Expr::Var(name, path) => walk(vars.get(name, doc)?.as_ref(), path),
            Expr::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .map(|e| Ok(e.eval(doc, vars)?.unwrap_or(Value::Null)))
                    .collect::<Result<_>>()?,
            )),
            Expr::Object(fields) => {
                let mut out = Map::new();
                for (k, e) in fields {
                    if let Some(v) = e.eval(doc, vars)? {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Value::Object(out))
            }
            Expr::Op(op, args) => eval_op(*op, args, doc, vars)?,
            Expr::Iterate {
                map,
                input,
                var,
                body,
            } => {
                let Some(items) = array_or_null(
                    input.eval(doc, vars)?,
                    if *map { "$map" } else { "$filter" },
                )?
                else {
                    return Ok(Some(Value::Null));
                };
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let scope = vars.with(var, item.clone());
                    let r = body.eval(doc, &scope)?;
                    if *map {
                        out.push(r.unwrap_or(Value::Null));
                    } else if truthy(r.as_ref()) {
                        out.push(item);
                    }
                }
                Some(Value::Array(out))
            }
            Expr::Reduce {
                input,
                initial,
                body,
            } => {
                let Some(items) = array_or_null(input.eval(doc, vars)?, "$reduce")? else {
                    return Ok(Some(Value::Null));
                };
                let mut acc = initial.eval(doc, vars)?.unwrap_or(Value::Null);
                for item in items {
                    let scope = vars.with("value", acc).with("this", item);
                    acc = body.eval(doc, &scope)?.unwrap_or(Value::Null);
                }
                Some(acc)
            }
            Expr::Let { vars: defs, body } => {
                let mut scope = vars.clone();
                for (name, e) in defs {
                    let v = e.eval(doc, vars)?.unwrap_or(Value::Null);
                    scope = scope.with(name, v);
                }
                body.eval(doc, &scope)?
            }
            Expr::Switch { branches, default } => {
                for (case, then) in branches {
                    if truthy(case.eval(doc, vars)?.as_ref()) {
                        return then.eval(doc, vars);
                    }
                }
                match default {
                    Some(d) => d.eval(doc, vars)?,
                    None => {
                        return Err(Error::invalid_input(
                            "$switch: no branch matched and there is no default",
                        ))
                    }
                }
            }
            Expr::RegexMatch {
                input,
                regex,
                options,
                compiled,
            } => {
                let input = input.eval(doc, vars)?;
                match compiled {
                    Some(r) => strings::regex_match(input.as_ref(), Some(r))?,
                    None => {
                        let r = strings::compile(
                            regex.eval(doc, vars)?.as_ref(),
                            options.eval(doc, vars)?.as_ref(),
                        )?;
                        strings::regex_match(input.as_ref(), r.as_ref())?
                    }
                }
            }
            Expr::GetField { field, input } => {
                objects::get_field(field, input.eval(doc, vars)?.as_ref())?
            }
        })
    }
}

fn parse_at(v: &Value, at: &str, depth: usize) -> Result<Expr> {
    if depth > MAX_DEPTH {
        return Err(bad(at, format!("nests deeper than {MAX_DEPTH} levels")));
    }
    let d = depth + 1;
    Ok(match v {
        Value::String(s) if s.starts_with("$$") => {
            let mut parts = s[2..].split('.').map(str::to_owned);
            let name = parts.next().unwrap_or_default();
            if name.is_empty() {
                return Err(bad(at, format!("{s:?} names no variable")));
            }
            Expr::Var(name, parts.collect())
        }
        Value::String(s) if s.starts_with('$') => {
            let path: Vec<String> = s[1..].split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(bad(at, format!("{s:?} is not a field path")));
            }
            Expr::Field(path)
        }
        Value::Array(items) => Expr::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, e)| parse_at(e, &format!("{at}[{i}]"), d))
                .collect::<Result<_>>()?,
        ),
        Value::Object(o) if as_date(v).is_some() => Expr::Literal(v.clone()),
        Value::Object(o) => match o.iter().next() {
            Some((k, arg)) if k.starts_with('$') => {
                if o.len() != 1 {
                    return Err(bad(
                        at,
                        format!(
                            "an operator document takes one operator, not {} keys",
                            o.len()
                        ),
                    ));
                }
                operator(k, arg, &format!("{at}.{k}"), d)?
            }
            _ => Expr::Object(
                o.iter()
                    .map(|(k, e)| Ok((k.clone(), parse_at(e, &format!("{at}.{k}"), d)?)))
                    .collect::<Result<_>>()?,
            ),
        },
        other => Expr::Literal(other.clone()),
    })
}

fn operator(name: &str, arg: &Value, at: &str, d: usize) -> Result<Expr> {
    let named = |key: &str| -> Result<&Value> {
        arg.get(key)
            .ok_or_else(|| bad(at, format!("missing {key:?}")))
    };
    let sub = |v: &Value, key: &str| parse_at(v, &format!("{at}.{key}"), d).map(Box::new);
    Ok(match name {
        "$literal" => Expr::Literal(arg.clone()),
        "$map" | "$filter" => {
            let var = match arg.get("as") {
                None => "this".to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(bad(at, "\"as\" must be a string")),
            };
            let body_key = if name == "$map" { "in" } else { "cond" };
            if name == "$filter" && arg.get("limit").is_some() {
                return Err(bad(at, "\"limit\" is not supported"));
            }
            Expr::Iterate {
                map: name == "$map",
                input: sub(named("input")?, "input")?,
                var,
                body: sub(named(body_key)?, body_key)?,
            }
        }
        "$reduce" => Expr::Reduce {
            input: sub(named("input")?, "input")?,
            initial: sub(named("initialValue")?, "initialValue")?,
            body: sub(named("in")?, "in")?,
        },
        "$let" => {
            let Some(Value::Object(defs)) = arg.get("vars") else {
                return Err(bad(at, "\"vars\" must be a document"));
            };
            Expr::Let {
                vars: defs
                    .iter()
                    .map(|(k, e)| Ok((k.clone(), parse_at(e, &format!("{at}.vars.{k}"), d)?)))
                    .collect::<Result<_>>()?,
                body: sub(named("in")?, "in")?,
            }
        }
        "$switch" => {
            let Some(Value::Array(list)) = arg.get("branches") else {
                return Err(bad(at, "\"branches\" must be an array"));
            };
            let branches = list
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let here = format!("{at}.branches[{i}]");
                    let case = b
                        .get("case")
                        .ok_or_else(|| bad(&here, "missing \"case\""))?;
                    let then = b
                        .get("then")
                        .ok_or_else(|| bad(&here, "missing \"then\""))?;
                    Ok((parse_at(case, &here, d)?, parse_at(then, &here, d)?))
                })
                .collect::<Result<_>>()?;
            let default = arg.get("default").map(|v| sub(v, "default")).transpose()?;
            Expr::Switch { branches, default }
        }
        "$regexMatch" => {
            let Value::Object(_) = arg else {
                return Err(bad(at, "takes a document {input, regex, options}"));
            };
            let optional = |key: &str| match arg.get(key) {
                Some(v) => sub(v, key),
                None => Ok(Box::new(Expr::Literal(Value::Null))),
            };
            let (regex, options) = (sub(named("regex")?, "regex")?, optional("options")?);
            let compiled = match (&*regex, &*options) {
                (Expr::Literal(r), Expr::Literal(o)) => {
                    strings::compile(Some(r), Some(o)).map_err(|e| bad(at, e.message()))?
                }
                _ => None,
            };
            Expr::RegexMatch {
                input: sub(named("input")?, "input")?,
                regex,
                options,
                compiled,
            }
        }
        "$getField" => {
            let (field, input) = match arg {
                Value::Object(o) if o.contains_key("field") => (
                    named("field")?,
                    match o.get("input") {
                        Some(v) => sub(v, "input")?,
                        None => Box::new(Expr::Var("CURRENT".into(), Vec::new())),
                    },
                ),
                v => (v, Box::new(Expr::Var("CURRENT".into(), Vec::new()))),
            };
            let field = match field {
                Value::String(f) if !f.starts_with('$') => f.clone(),
                Value::Object(o) => match o.get("$literal") {
                    Some(Value::String(f)) if o.len() == 1 => f.clone(),
                    _ => return Err(bad(at, "\"field\" must be a constant string")),
                },
                _ => return Err(bad(at, "\"field\" must be a constant string")),
            };
            Expr::GetField { field, input }
        }
        "$cond" if arg.is_object() => Expr::Op(
            Op::Cond,
            vec![
                *sub(named("if")?, "if")?,
                *sub(named("then")?, "then")?,
                *sub(named("else")?, "else")?,
            ],
        ),
        _ => {
            let (op, arity) = Op::parse(name)
                .ok_or_else(|| bad(at, format!("unsupported expression operator {name}")))?;
            let args: Vec<Expr> = match arg {
                // An array is the argument list (`{$size: [[1, 2]]}` for a literal array).
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, e)| parse_at(e, &format!("{at}[{i}]"), d))
                    .collect::<Result<_>>()?,
                single => vec![parse_at(single, at, d)?],
            };
            let ok = match arity {
                Arity::Any => true,
                Arity::Exactly(n) => args.len() == n,
                Arity::AtLeast(n) => args.len() >= n,
            };
            if !ok {
                return Err(bad(
                    at,
                    format!("{name} takes {arity:?} arguments, got {}", args.len()),
                ));
            }
            fold_check(Expr::Op(op, args), at)?
        }
    })
}

/// MongoDB evaluates an operator whose arguments are all constant when it optimizes the
/// pipeline, so a type error there fails the whole pipeline even if no document reaches it;
/// the evaluator does the same.
fn fold_check(e: Expr, at: &str) -> Result<Expr> {
    if let Expr::Op(_, args) = &e {
        if args.iter().all(constant) {
            let vars = Vars::constant();
            if let Err(err) = e.eval(&Value::Null, &vars) {
                return Err(bad(at, err.message()));
            }
        }
    }
    Ok(e)
}

/// Whether `e` depends on no document and no variable (a `"this.…"` placeholder is bound
/// later, by [`Pipeline::bind_this`](super::Pipeline::bind_this)).
fn constant(e: &Expr) -> bool {
    match e {
        Expr::Literal(Value::String(s)) => !s.starts_with("this."),
        Expr::Literal(_) => true,
        Expr::Array(items) => items.iter().all(constant),
        Expr::Object(fields) => fields.iter().all(|(_, e)| constant(e)),
        Expr::Op(_, args) => args.iter().all(constant),
        _ => false,
    }
}

/// The conditions `e` (a `$match`'s `$expr`) implies that [`Filter::ExprCmp`] can state: its
/// comparisons of a field path with a constant number, alone or under `$and`.
pub(crate) fn numeric_bounds(e: &Expr) -> Vec<Filter> {
    let cmp = |op: Op| match op {
        Op::Eq => Some(CmpOp::Eq),
        Op::Gt => Some(CmpOp::Gt),
        Op::Gte => Some(CmpOp::Gte),
        Op::Lt => Some(CmpOp::Lt),
        Op::Lte => Some(CmpOp::Lte),
        _ => None,
    };
    let flipped = |op: CmpOp| match op {
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Gte => CmpOp::Lte,
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Lte => CmpOp::Gte,
        CmpOp::Eq => CmpOp::Eq,
    };
    let number = |c: &Expr| -> Option<Scalar> {
        if !constant(c) {
            return None;
        }
        match c.eval(&Value::Null, &Vars::constant()).ok()?? {
            // An integer past i64 would round as a float: no bound for it.
            Value::Number(n) => Some(match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None if n.is_f64() => Scalar::Float(n.as_f64().filter(|f| f.is_finite())?),
                None => return None,
            }),
            _ => None,
        }
    };
    let bound = |path: &[String], op: CmpOp, c: &Expr| {
        let path = path.join(".");
        FieldPath::parse(&path).ok()?;
        Some(Filter::ExprCmp(path, op, number(c)?))
    };
    match e {
        Expr::Op(Op::And, args) => args.iter().flat_map(numeric_bounds).collect(),
        Expr::Op(op, args) if args.len() == 2 => {
            let Some(op) = cmp(*op) else {
                return Vec::new();
            };
            match (&args[0], &args[1]) {
                (Expr::Field(p), c) => bound(p, op, c),
                (c, Expr::Field(p)) => bound(p, flipped(op), c),
                _ => None,
            }
            .into_iter()
            .collect()
        }
        _ => Vec::new(),
    }
}

/// MongoDB's truthiness: false, null, missing and zero are false.
pub(crate) fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(_) => true,
    }
}

/// Equality as `$eq` sees it: missing equals only missing.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        _ => compare(a, b) == Ordering::Equal,
    }
}

fn array_or_null(v: Option<Value>, op: &str) -> Result<Option<Vec<Value>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(other) => Err(Error::invalid_input(format!(
            "{op} requires an array, got {}",
            type_name(&other)
        ))),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(_) => "long",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        v if as_date(v).is_some() => "date",
        Value::Object(_) => "object",
    }
}

/// A number as exact integer or float.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(v: &Value) -> Option<Num> {
        let Value::Number(n) = v else { return None };
        Some(match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64()?),
        })
    }
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
    fn value(self) -> Value {
        match self {
            Num::Int(i) => Value::Number(i.into()),
            Num::Float(f) => float(f),
        }
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn int_or_float(exact: Option<i64>, approx: f64) -> Num {
    exact.map_or(Num::Float(approx), Num::Int)
}

fn date_ms(d: DateTime<Utc>) -> i64 {
    d.timestamp_millis()
}

fn out_of_range() -> Error {
    Error::invalid_input("date arithmetic left the representable range")
}

fn date_of_ms(ms: i64) -> Result<Value> {
    let d = DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(out_of_range)?;
    date_value(d)
}

fn eval_op(op: Op, args: &[Expr], doc: &Value, vars: &Vars) -> Result<Option<Value>> {
    // Short-circuiting and lazy operators first.
    match op {
        Op::And => {
            for a in args {
                if !truthy(a.eval(doc, vars)?.as_ref()) {
                    return Ok(Some(Value::Bool(false)));
                }
            }
            return Ok(Some(Value::Bool(true)));
        }
        Op::Or => {
            for a in args {
                if truthy(a.eval(doc, vars)?.as_ref()) {
                    return Ok(Some(Value::Bool(true)));
                }
            }
            return Ok(Some(Value::Bool(false)));
        }
        Op::Cond => {
            let branch = if truthy(args[0].eval(doc, vars)?.as_ref()) {
                &args[1]
            } else {
                &args[2]
            };
            return branch.eval(doc, vars);
        }
        // A constant list is searched where it is, not copied for every document.
        Op::In => {
            if let [needle, Expr::Literal(Value::Array(list))] = args {
                let needle = needle.eval(doc, vars)?;
                for x in list {
                    super::limits::tick()?;
                    if same(Some(x), needle.as_ref()) {
                        return Ok(Some(Value::Bool(true)));
                    }
                }
                return Ok(Some(Value::Bool(false)));
            }
        }
        Op::IfNull => {
            let (last, rest) = args.split_last().unwrap_or((&args[0], &[]));
            for a in rest {
                match a.eval(doc, vars)? {
                    None | Some(Value::Null) => {}
                    v => return Ok(v),
                }
            }
            return last.eval(doc, vars);
        }
        _ => {}
    }
    let vals: Vec<Option<Value>> = args
        .iter()
        .map(|a| a.eval(doc, vars))
        .collect::<Result<_>>()?;
    let arg = |i: usize| vals.get(i).and_then(Option::as_ref);
    let nullish = |i: usize| matches!(arg(i), None | Some(Value::Null));
    let b = |x: bool| Ok(Some(Value::Bool(x)));
    match op {
        Op::Not => b(!truthy(arg(0))),
        Op::Eq => b(same(arg(0), arg(1))),
        Op::Ne => b(!same(arg(0), arg(1))),
        Op::Gt => b(compare(arg(0), arg(1)) == Ordering::Greater),
        Op::Gte => b(compare(arg(0), arg(1)) != Ordering::Less),
        Op::Lt => b(compare(arg(0), arg(1)) == Ordering::Less),
        Op::Lte => b(compare(arg(0), arg(1)) != Ordering::Greater),
        Op::Cmp => Ok(Some(Value::from(match compare(arg(0), arg(1)) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }))),
        Op::Add => add(&vals),
        Op::Multiply => {
            let mut acc = Num::Int(1);
            for v in &vals {
                match v.as_ref() {
                    None | Some(Value::Null) => return Ok(Some(Value::Null)),
                    Some(x) => {
                        let n = Num::of(x).ok_or_else(|| type_error("$multiply", "numbers", x))?;
                        acc = match (acc, n) {
                            (Num::Int(a), Num::Int(c)) => {
                                int_or_float(a.checked_mul(c), a as f64 * c as f64)
                            }
                            (a, c) => Num::Float(a.f() * c.f()),
                        };
                    }
                }
            }
            Ok(Some(acc.value()))
        }
        Op::Subtract => {
            if nullish(0) || nullish(1) {
                return Ok(Some(Value::Null));
            }
            let (x, y) = (
                arg(0).unwrap_or(&Value::Null),
                arg(1).unwrap_or(&Value::Null),
            );
            match (as_date(x), as_date(y), Num::of(x), Num::of(y)) {
                (Some(a), Some(c), _, _) => Ok(Some(Value::from(date_ms(a) - date_ms(c)))),
                (Some(a), None, _, Some(n)) => {
                    date_of_ms(date_ms(a) - n.f().round() as i64).map(Some)
                }
                (None, None, Some(Num::Int(a)), Some(Num::Int(c))) => Ok(Some(
                    int_or_float(a.checked_sub(c), a as f64 - c as f64).value(),
                )),
                (None, None, Some(a), Some(c)) => Ok(Some(float(a.f() - c.f()))),
                _ => Err(Error::invalid_input(format!(
                    "$subtract cannot subtract {} from {}",
                    type_name(y),
                    type_name(x)
                ))),
            }
        }
        Op::Divide | Op::Mod => {
            if nullish(0) || nullish(1) {
                return Ok(Some(Value::Null));
            }
            let name = if op == Op::Divide { "$divide" } else { "$mod" };
            let x = Num::of(arg(0).unwrap_or(&Value::Null))
                .ok_or_else(|| type_error(name, "numbers", arg(0).unwrap_or(&Value::Null)))?;
            let y = Num::of(arg(1).unwrap_or(&Value::Null))
                .ok_or_else(|| type_error(name, "numbers", arg(1).unwrap_or(&Value::Null)))?;
            if y.f() == 0.0 {
                return Err(Error::invalid_input(format!("{name} by zero")));
            }
            Ok(Some(match (op, x, y) {
                (Op::Divide, a, c) => float(a.f() / c.f()),
                (_, Num::Int(a), Num::Int(c)) => Value::from(a.checked_rem(c).unwrap_or(0)),
                (_, a, c) => float(a.f() % c.f()),
            }))
        }
        Op::Abs => match arg(0) {
            None | Some(Value::Null) => Ok(Some(Value::Null)),
            Some(x) => match Num::of(x) {
                Some(Num::Int(i)) => Ok(Some(
                    i.checked_abs()
                        .map_or_else(|| float((i as f64).abs()), Value::from),
                )),
                Some(Num::Float(f)) => Ok(Some(float(f.abs()))),
                None => Err(type_error("$abs", "a number", x)),
            },
        },
        Op::ToLong | Op::ToInt | Op::ToDouble => convert_number(op, arg(0)),
        Op::ToString => strings::to_string(arg(0)),
        Op::ToBool => Ok(match arg(0) {
            None | Some(Value::Null) => Some(Value::Null),
            v => Some(Value::Bool(truthy(v))),
        }),
        Op::Size => match arg(0) {
            Some(Value::Array(a)) => Ok(Some(Value::from(a.len()))),
            other => Err(Error::invalid_input(format!(
                "$size requires an array, got {}",
                other.map_or("missing", type_name)
            ))),
        },
        Op::ArrayElemAt => {
            if nullish(0) || nullish(1) {
                return Ok(Some(Value::Null));
            }
            let Some(Value::Array(a)) = arg(0) else {
                return Err(type_error(
                    "$arrayElemAt",
                    "an array",
                    arg(0).unwrap_or(&Value::Null),
                ));
            };
            let i = arg(1)
                .and_then(Value::as_i64)
                .ok_or_else(|| Error::invalid_input("$arrayElemAt requires an integer index"))?;
            let index = if i < 0 { a.len() as i64 + i } else { i };
            Ok(usize::try_from(index).ok().and_then(|i| a.get(i)).cloned())
        }
        Op::First | Op::Last => match arg(0) {
            None | Some(Value::Null) => Ok(Some(Value::Null)),
            Some(Value::Array(a)) => {
                Ok(if op == Op::First { a.first() } else { a.last() }.cloned())
            }
            Some(v) => Err(type_error(
                if op == Op::First { "$first" } else { "$last" },
                "an array",
                v,
            )),
        },
        Op::In => match arg(1) {
            Some(Value::Array(a)) => b(a.iter().any(|x| same(Some(x), arg(0)))),
            other => Err(Error::invalid_input(format!(
                "$in requires an array as its second argument, got {}",
                other.map_or("missing", type_name)
            ))),
        },
        Op::ConcatArrays => {
            let mut out = Vec::new();
            for v in &vals {
                match v {
                    None | Some(Value::Null) => return Ok(Some(Value::Null)),
                    Some(Value::Array(a)) => out.extend(a.iter().cloned()),
                    Some(x) => return Err(type_error("$concatArrays", "arrays", x)),
                }
            }
            Ok(Some(Value::Array(out)))
        }
        Op::SetUnion | Op::SetIntersection => {
            let name = if op == Op::SetUnion {
                "$setUnion"
            } else {
                "$setIntersection"
            };
            let mut sets: Vec<Vec<Value>> = Vec::with_capacity(vals.len());
            for v in &vals {
                match v {
                    None | Some(Value::Null) => return Ok(Some(Value::Null)),
                    Some(Value::Array(a)) => sets.push(dedup(a.clone())),
                    Some(x) => return Err(type_error(name, "arrays", x)),
                }
            }
            let out = if op == Op::SetUnion {
                dedup(sets.into_iter().flatten().collect())
            } else {
                let mut iter = sets.into_iter();
                let first = iter.next().unwrap_or_default();
                let rest: Vec<Vec<Value>> = iter.collect();
                first
                    .into_iter()
                    .filter(|x| {
                        rest.iter()
                            .all(|s| s.iter().any(|y| same(Some(x), Some(y))))
                    })
                    .collect()
            };
            Ok(Some(Value::Array(out)))
        }
        Op::AnyElementTrue | Op::AllElementsTrue => match arg(0) {
            Some(Value::Array(a)) => b(if op == Op::AnyElementTrue {
                a.iter().any(|x| truthy(Some(x)))
            } else {
                a.iter().all(|x| truthy(Some(x)))
            }),
            other => Err(Error::invalid_input(format!(
                "{} requires an array, got {}",
                if op == Op::AnyElementTrue {
                    "$anyElementTrue"
                } else {
                    "$allElementsTrue"
                },
                other.map_or("missing", type_name)
            ))),
        },
        Op::IsArray => b(matches!(arg(0), Some(Value::Array(_)))),
        Op::Concat => {
            let mut out = String::new();
            for v in &vals {
                match v {
                    None | Some(Value::Null) => return Ok(Some(Value::Null)),
                    Some(Value::String(s)) => out.push_str(s),
                    Some(x) => return Err(type_error("$concat", "strings", x)),
                }
            }
            Ok(Some(Value::String(out)))
        }
        Op::ToLower | Op::ToUpper => Ok(Some(Value::String(match arg(0) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if op == Op::ToLower => s.to_lowercase(),
            Some(Value::String(s)) => s.to_uppercase(),
            Some(Value::Number(n)) => n.to_string(),
            Some(v) => return Err(type_error("$toLower/$toUpper", "a string", v)),
        }))),
        Op::MergeObjects => {
            let mut out = Map::new();
            for v in &vals {
                match v {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(o)) => {
                        out.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())))
                    }
                    Some(x) => return Err(type_error("$mergeObjects", "documents", x)),
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Op::Max | Op::Min => {
            // One array argument: over its elements; null and missing are ignored.
            let items: Vec<&Value> = match vals.as_slice() {
                [Some(Value::Array(a))] => a.iter().collect(),
                _ => vals.iter().flatten().collect(),
            };
            let pick = items
                .into_iter()
                .filter(|v| !v.is_null())
                .reduce(|best, v| {
                    let o = compare(Some(v), Some(best));
                    if (op == Op::Max && o.is_gt()) || (op == Op::Min && o.is_lt()) {
                        v
                    } else {
                        best
                    }
                });
            Ok(Some(pick.cloned().unwrap_or(Value::Null)))
        }
        Op::Substr | Op::SubstrCp => strings::substr(op == Op::SubstrCp, arg(0), arg(1), arg(2)),
        Op::ObjectToArray => objects::object_to_array(arg(0)),
        Op::ArrayToObject => objects::array_to_object(arg(0)),
        Op::And | Op::Or | Op::Cond | Op::IfNull => unreachable_op(op),
    }
}

fn unreachable_op(op: Op) -> Result<Option<Value>> {
    Err(Error::permanent(format!(
        "aggregate: {op:?} evaluated out of place"
    )))
}

fn type_error(op: &str, wants: &str, got: &Value) -> Error {
    Error::invalid_input(format!("{op} requires {wants}, got {}", type_name(got)))
}

/// `$add`: numbers, and at most one date (plus milliseconds).
fn add(vals: &[Option<Value>]) -> Result<Option<Value>> {
    let mut acc = Num::Int(0);
    let mut date: Option<DateTime<Utc>> = None;
    for v in vals {
        match v.as_ref() {
            None | Some(Value::Null) => return Ok(Some(Value::Null)),
            Some(x) => {
                if let Some(d) = as_date(x) {
                    if date.replace(d).is_some() {
                        return Err(Error::invalid_input("$add: only one date may be added"));
                    }
                    continue;
                }
                let n = Num::of(x).ok_or_else(|| type_error("$add", "numbers or a date", x))?;
                acc = match (acc, n) {
                    (Num::Int(a), Num::Int(c)) => {
                        int_or_float(a.checked_add(c), a as f64 + c as f64)
                    }
                    (a, c) => Num::Float(a.f() + c.f()),
                };
            }
        }
    }
    match date {
        Some(d) => date_ms(d)
            .checked_add(acc.f().round() as i64)
            .ok_or_else(out_of_range)
            .and_then(date_of_ms)
            .map(Some),
        None => Ok(Some(acc.value())),
    }
}

/// `$toLong`, `$toInt`, `$toDouble` with MongoDB's `$convert` rules: strings must be in the
/// target's format (`"1.5"` is no integer), dates convert to milliseconds for long and double
/// only, and a value outside the target's range is an error, never a saturated one.
fn convert_number(op: Op, v: Option<&Value>) -> Result<Option<Value>> {
    let name = match op {
        Op::ToLong => "$toLong",
        Op::ToInt => "$toInt",
        _ => "$toDouble",
    };
    let Some(v) = v else {
        return Ok(Some(Value::Null));
    };
    let fail = |why: String| Err(Error::invalid_input(format!("{name}: {why}")));
    let n: Num = match v {
        Value::Null => return Ok(Some(Value::Null)),
        Value::Bool(x) => Num::Int(i64::from(*x)),
        Value::Number(_) => Num::of(v).unwrap_or(Num::Float(f64::NAN)),
        Value::String(s) => match (op, s.parse::<i64>(), s.parse::<f64>()) {
            (Op::ToDouble, _, Ok(f)) => Num::Float(f),
            (_, Ok(i), _) => Num::Int(i),
            _ => return fail(format!("{s:?} is not in the format of the target type")),
        },
        v => match (as_date(v), op) {
            (Some(_), Op::ToInt) => return fail("a date does not convert to an int".into()),
            (Some(d), _) => Num::Int(date_ms(d)),
            (None, _) => return Err(type_error(name, "a number, string, bool or date", v)),
        },
    };
    let (lo, hi) = match op {
        Op::ToInt => (f64::from(i32::MIN), f64::from(i32::MAX)),
        _ => (i64::MIN as f64, i64::MAX as f64),
    };
    Ok(Some(match (op, n) {
        (Op::ToDouble, n) => float(n.f()),
        (Op::ToInt, Num::Int(i)) if i32::try_from(i).is_err() => {
            return fail(format!("{i} is outside the int range"))
        }
        (_, Num::Int(i)) => Value::from(i),
        (_, Num::Float(f)) => {
            if !f.is_finite() || f.trunc() >= hi || f.trunc() < lo {
                return fail(format!("{f} is outside the target range"));
            }
            Value::from(f.trunc() as i64)
        }
    }))
}

/// Distinct values, in first-seen order.
pub(crate) fn dedup(values: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(values.len());
    for v in values {
        if !out.iter().any(|o| same(Some(o), Some(&v))) {
            out.push(v);
        }
    }
    out
}
