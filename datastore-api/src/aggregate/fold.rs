//! Plan-time simplification of expressions: with the variables known before any document is
//! read (`$$NOW`, a `$lookup`'s `let` values for one outer document, fields an earlier
//! `$addFields` set to a constant), every sub-expression that reads nothing else is
//! evaluated once and becomes a constant.

use super::expr::{Expr, Op};
use super::Vars;
use crate::filter::{Filter, Scalar};
use crate::path::FieldPath;
use crate::value::Value;

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
