//! How a [`Plan`] prints: what planning decided, the scan in MongoDB's words, the stages
//! left, and for a `$lookup` the scan it makes per document (its `let` variables by name).

use std::fmt;

use super::{plan_stages, Plan};
use crate::Stage;
use datastore_api::filter::Filter;
use datastore_api::value::Value;

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.planned.notes {
            writeln!(f, "  fold   {note}")?;
        }
        if let Some(i) = self.planned.nothing_at {
            return writeln!(
                f,
                "  result nothing: {} is false (the store is not read)",
                self.name(i)
            );
        }
        let scan = match &self.planned.scan {
            Filter::And(parts) if parts.is_empty() => "every document".to_owned(),
            other => describe(other),
        };
        writeln!(
            f,
            "  scan   {scan}{}",
            if self.bounded() {
                ""
            } else {
                "   (no index bound)"
            }
        )?;
        for (i, stage) in &self.planned.rest {
            match stage {
                Stage::Lookup(l) => {
                    // The correlated scan, with the `let` variables shown by name.
                    let mut vars = self.vars.clone();
                    for (name, _) in &l.lets {
                        vars = vars.with(name, Value::String(format!("$${name}")));
                    }
                    let sub = plan_stages(&l.stages, &vars, false, &|j| format!("pipeline[{j}]"))
                        .map(|p| describe(&p.scan))
                        .unwrap_or_default();
                    writeln!(f, "  then   {} per document: fetch {sub}", self.name(*i))?;
                }
                _ => writeln!(f, "  then   {}", self.name(*i))?,
            }
        }
        if let Some(n) = self.streaming {
            writeln!(
                f,
                "  stop   at {n} result(s): candidates are fetched in growing batches"
            )?;
        }
        Ok(())
    }
}

/// A filter in MongoDB's words, for explanations.
fn describe(f: &Filter) -> String {
    match f {
        Filter::All => "every document".into(),
        Filter::And(parts) if parts.len() == 1 => describe(&parts[0]),
        Filter::And(parts) => parts.iter().map(describe).collect::<Vec<_>>().join(" and "),
        Filter::Or(parts) => format!(
            "({})",
            parts.iter().map(describe).collect::<Vec<_>>().join(" or ")
        ),
        Filter::Not(inner) => format!("not ({})", describe(inner)),
        Filter::ExprCmp(p, op, v) => format!("{p} {} {}", op.symbol(), scalar(v)),
        Filter::Eq(p, v) => format!("{p} == {}", scalar(v)),
        Filter::Ne(p, v) => format!("{p} != {}", scalar(v)),
        Filter::Gt(p, v) => format!("{p} > {}", scalar(v)),
        Filter::Gte(p, v) => format!("{p} >= {}", scalar(v)),
        Filter::Lt(p, v) => format!("{p} < {}", scalar(v)),
        Filter::Lte(p, v) => format!("{p} <= {}", scalar(v)),
        Filter::In(p, vs) => format!(
            "{p} in [{}]",
            vs.iter().map(scalar).collect::<Vec<_>>().join(", ")
        ),
        Filter::Nin(p, vs) => format!(
            "{p} not in [{}]",
            vs.iter().map(scalar).collect::<Vec<_>>().join(", ")
        ),
        Filter::EqValue(p, v) => format!("{p} == {v}"),
        Filter::Exists(p, true) => format!("{p} exists"),
        Filter::Exists(p, false) => format!("{p} is missing"),
    }
}

fn scalar(v: &datastore_api::filter::Scalar) -> String {
    use datastore_api::filter::Scalar::*;
    match v {
        Null => "null".into(),
        Bool(b) => b.to_string(),
        Int(i) => i.to_string(),
        Float(x) => x.to_string(),
        String(s) => format!("{s:?}"),
        Date(d) => d.to_rfc3339(),
    }
}
