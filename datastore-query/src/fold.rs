//! Plan-time simplification of expressions: with the variables known before any document is
//! read (`$$NOW`, a `$lookup`'s `let` values for one outer document, fields an earlier
//! `$addFields` set to a constant), every sub-expression that reads nothing else is
//! evaluated once and becomes a constant.

use super::expr::{Expr, Op};
use super::Vars;
use datastore_api::filter::{Filter, Scalar};
use datastore_api::path::FieldPath;
use datastore_api::value::Value;

/// What is known at plan time.
pub(super) struct Known<'a> {
    /// `$$NOW` and any bound `let` variables.
    pub vars: &'a Vars,
    /// Top-level fields an earlier stage set to a constant, with their values.
    pub fields: &'a [(String, Value)],
}

impl Known<'_> {
    fn var(&self, name: &str) -> bool {
        name == "NOW" || name == "REMOVE" || self.vars.is_bound(name)
    }

    fn field(&self, first: &str) -> Option<&Value> {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n == first)
            .map(|(_, v)| v)
    }
}

/// `e` with every sub-expression that reads only what is known replaced by its value. A
/// sub-expression whose evaluation fails (or is missing) is kept, so that its error, if any
/// document reaches it, is raised where MongoDB raises it.
pub(super) fn fold(e: &Expr, known: &Known<'_>) -> Expr {
    if independent(e, known, &[]) {
        // A known field is read from the constant document its stage made.
        let doc = Value::Object(known.fields.iter().cloned().collect());
        if let Ok(Some(v)) = e.eval(&doc, known.vars) {
            return Expr::Literal(v);
        }
        return e.clone();
    }
    match e {
        Expr::Op(op, args) => Expr::Op(*op, args.iter().map(|a| fold(a, known)).collect()),
        Expr::Array(items) => Expr::Array(items.iter().map(|a| fold(a, known)).collect()),
        Expr::Object(fields) => Expr::Object(
            fields
                .iter()
                .map(|(k, a)| (k.clone(), fold(a, known)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether `e` reads nothing but what is known (and the variables in `locals`, bound by an
/// enclosing `$map`, `$filter`, `$reduce` or `$let` that is itself independent).
fn independent(e: &Expr, known: &Known<'_>, locals: &[&str]) -> bool {
    let all = |list: &[Expr], locals: &[&str]| list.iter().all(|x| independent(x, known, locals));
    match e {
        Expr::Literal(Value::String(s)) => !s.starts_with("this."),
        Expr::Literal(_) => true,
        Expr::Field(path) => path.first().is_some_and(|f| known.field(f).is_some()),
        Expr::Var(name, _) => locals.contains(&name.as_str()) || known.var(name),
        Expr::Array(items) => all(items, locals),
        Expr::Object(fields) => fields.iter().all(|(_, x)| independent(x, known, locals)),
        Expr::Op(_, args) => all(args, locals),
        Expr::Iterate {
            input, var, body, ..
        } => {
            let mut inner = locals.to_vec();
            inner.push(var);
            independent(input, known, locals) && independent(body, known, &inner)
        }
        Expr::Reduce {
            input,
            initial,
            body,
        } => {
            let mut inner = locals.to_vec();
            inner.extend(["value", "this"]);
            independent(input, known, locals)
                && independent(initial, known, locals)
                && independent(body, known, &inner)
        }
        Expr::Let { vars, body } => {
            let mut inner = locals.to_vec();
            inner.extend(vars.iter().map(|(n, _)| n.as_str()));
            vars.iter().all(|(_, x)| independent(x, known, locals))
                && independent(body, known, &inner)
        }
        Expr::Switch { branches, default } => {
            branches
                .iter()
                .all(|(c, t)| independent(c, known, locals) && independent(t, known, locals))
                && default
                    .as_deref()
                    .is_none_or(|d| independent(d, known, locals))
        }
        Expr::RegexMatch {
            input,
            regex,
            options,
            ..
        } => {
            independent(input, known, locals)
                && independent(regex, known, locals)
                && independent(options, known, locals)
        }
        Expr::GetField { input, .. } => independent(input, known, locals),
    }
}

/// Query conditions a (folded) `$expr` implies and an index can answer, a superset of what
/// it matches: numeric comparisons of a field path with a constant (as
/// [`Filter::ExprCmp`]), and equality of a field path with a constant string, boolean or
/// `null` (as [`Filter::Eq`]: the query also matches arrays holding the value and, for
/// `null`, a missing field, so it only ever admits more), alone or under `$and`.
pub(super) fn implied_filters(e: &Expr) -> Vec<Filter> {
    let mut out = super::expr::numeric_bounds(e);
    equalities(e, &mut out);
    out
}

/// Whether the conditions [`implied_filters`] gives for `e` say all it says: an `$and` of
/// comparisons of a field path with a constant number, which [`Filter::ExprCmp`] states
/// exactly.
pub(super) fn exactly_bounds(e: &Expr) -> bool {
    match e {
        Expr::Op(Op::And, args) => !args.is_empty() && args.iter().all(exactly_bounds),
        Expr::Op(Op::Eq | Op::Gt | Op::Gte | Op::Lt | Op::Lte, args) if args.len() == 2 => {
            super::expr::numeric_bounds(e).len() == 1
        }
        _ => false,
    }
}

fn equalities(e: &Expr, out: &mut Vec<Filter>) {
    match e {
        Expr::Op(Op::And, args) => args.iter().for_each(|a| equalities(a, out)),
        // Each branch's conditions, or'ed: only when every branch has some.
        Expr::Op(Op::Or, args) if !args.is_empty() => {
            let branches: Vec<Vec<Filter>> = args.iter().map(implied_filters).collect();
            if branches.iter().all(|b| !b.is_empty()) {
                out.push(Filter::Or(branches.into_iter().map(Filter::And).collect()));
            }
        }
        Expr::Op(Op::Eq, args) if args.len() == 2 => {
            let pair = match (&args[0], &args[1]) {
                (Expr::Field(p), Expr::Literal(v)) | (Expr::Literal(v), Expr::Field(p)) => {
                    Some((p, v))
                }
                _ => None,
            };
            let Some((path, value)) = pair else { return };
            let scalar = match value {
                Value::String(s) => Scalar::String(s.clone()),
                Value::Bool(b) => Scalar::Bool(*b),
                Value::Null => Scalar::Null,
                // Numbers are bounded by `numeric_bounds`; documents and arrays are not scalars.
                _ => return,
            };
            let path = path.join(".");
            if FieldPath::parse(&path).is_ok() {
                out.push(Filter::Eq(path, scalar));
            }
        }
        _ => {}
    }
}

/// The field `"$P.V"` an `$addFields` value reads key by key: `{$arrayToObject: {$map:
/// {input: "$P" (or a $filter of it), as: x, in: {k: "$$x.K", v: "$$x.V"}}}}`. Reading
/// `name.X` of the made document reads the `V` of some element of `P`, so a condition on it
/// implies one on `P.V` (what NVSentinel's XID 74 rules build their registers with).
pub(super) fn entries_source(e: &Expr) -> Option<String> {
    let Expr::Op(Op::ArrayToObject, args) = e else {
        return None;
    };
    let Some(Expr::Iterate {
        map: true,
        input,
        var,
        body,
    }) = args.first()
    else {
        return None;
    };
    let mut source = input.as_ref();
    while let Expr::Iterate {
        map: false, input, ..
    } = source
    {
        source = input;
    }
    let Expr::Field(list) = source else {
        return None;
    };
    let Expr::Object(fields) = body.as_ref() else {
        return None;
    };
    let value = fields.iter().find(|(k, _)| k == "v")?;
    match &value.1 {
        Expr::Var(name, path) if name == var && path.len() == 1 => {
            Some(format!("{}.{}", list.join("."), path[0]))
        }
        _ => None,
    }
}

/// `f` over the documents before an `$addFields` that wrote `written` (top-level names),
/// `sources` among them made by [`entries_source`]: a string equality on `name.X` becomes
/// one on the source path; a condition on another written field says nothing (`None`).
pub(super) fn before_fields(
    f: &Filter,
    written: &[String],
    sources: &[(String, String)],
) -> Option<Filter> {
    let first = |p: &str| p.split('.').next().unwrap_or("").to_owned();
    match f {
        Filter::And(parts) => {
            let mut kept: Vec<(Filter, usize)> = Vec::new();
            for part in parts
                .iter()
                .filter_map(|p| before_fields(p, written, sources))
            {
                match kept.iter_mut().find(|(k, _)| *k == part) {
                    Some((_, n)) => *n += 1,
                    None => kept.push((part, 1)),
                }
            }
            // A value required of several keys of a made document (registers all zero but
            // one) is one most documents hold: as a scan condition it would lead a server's
            // planner to its index for little; the other conditions narrow.
            let from_source =
                |f: &Filter| matches!(f, Filter::Eq(p, _) if sources.iter().any(|(_, s)| s == p));
            let kept: Vec<Filter> = kept
                .into_iter()
                .filter(|(f, n)| *n == 1 || !from_source(f))
                .map(|(f, _)| f)
                .collect();
            (!kept.is_empty()).then_some(Filter::And(kept))
        }
        Filter::Or(parts) => parts
            .iter()
            .map(|p| before_fields(p, written, sources))
            .collect::<Option<Vec<_>>>()
            .map(Filter::Or),
        Filter::Eq(path, value @ Scalar::String(_)) if written.contains(&first(path)) => {
            let (name, rest) = path.split_once('.')?;
            let source = sources.iter().find(|(n, _)| n == name)?;
            (!rest.contains('.')).then(|| Filter::Eq(source.1.clone(), value.clone()))
        }
        other if reads(other).iter().any(|p| written.contains(&first(p))) => None,
        other => Some(other.clone()),
    }
}

/// The paths a filter reads.
fn reads(f: &Filter) -> Vec<&str> {
    match f {
        Filter::All => Vec::new(),
        Filter::And(parts) | Filter::Or(parts) => parts.iter().flat_map(reads).collect(),
        Filter::Not(inner) => reads(inner),
        Filter::Eq(p, _)
        | Filter::Ne(p, _)
        | Filter::Gt(p, _)
        | Filter::Gte(p, _)
        | Filter::Lt(p, _)
        | Filter::Lte(p, _)
        | Filter::In(p, _)
        | Filter::Nin(p, _)
        | Filter::Exists(p, _)
        | Filter::EqValue(p, _)
        | Filter::ExprCmp(p, _, _) => vec![p.as_str()],
    }
}
