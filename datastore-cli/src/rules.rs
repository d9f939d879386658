//! `datastore rules check`: reads the health-events-analyzer's rules as the chart carries
//! them, parses every rule, and shows what each one's plan reads (`--explain`), warning on a
//! rule that scans without an index bound (the failure mode behind slow analyzers).

use std::path::Path;

use datastore::analyzer::{self, Analyzer, Rule};
use datastore::Document;
use serde_json::json;

use crate::cli::RulesCheckArgs;
use datastore_tools::error::{CliError, CliResult};

/// Checks the rules and prints the report; exit code 1 when a rule does not parse.
pub fn check(args: &RulesCheckArgs) -> CliResult<()> {
    print!("{}", report(args)?);
    Ok(())
}

fn read(path: &Path) -> CliResult<String> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::check(format!("cannot read {}: {e}", path.display())))
}

/// The report of `datastore rules check`.
pub fn report(args: &RulesCheckArgs) -> CliResult<String> {
    let rules = match (&args.values, &args.toml) {
        (Some(values), None) => analyzer::rules::from_values_yaml(&read(values)?),
        (None, Some(toml)) => analyzer::rules::from_toml(&read(toml)?),
        _ => {
            return Err(CliError::check(
                "give the rules with --values FILE (the chart's values file) or --toml FILE (config.toml)",
            ))
        }
    }
    .map_err(|e| CliError::check(e.to_string()))?;
    let event = match &args.event {
        Some(path) => serde_json::from_str::<Document>(&read(path)?).map_err(|e| {
            CliError::check(format!(
                "{}: not a JSON health-event document: {e}",
                path.display()
            ))
        })?,
        None => sample_event(),
    };
    let analyzer = Analyzer::new(rules)?;
    let mut out = String::new();
    let mut unbounded = 0;
    for rule in analyzer.rules() {
        let line = explain(&analyzer, rule, &event, args.explain, &mut unbounded)?;
        out.push_str(&line);
    }
    let enabled = analyzer.enabled().count();
    out.push_str(&format!(
        "{} rules parse ({enabled} enabled); {} scan with an index bound, {unbounded} without\n",
        analyzer.rules().len(),
        analyzer.rules().len() - unbounded
    ));
    Ok(out)
}

fn explain(
    analyzer: &Analyzer,
    rule: &Rule,
    event: &Document,
    full: bool,
    unbounded: &mut usize,
) -> CliResult<String> {
    let state = if rule.evaluate_rule {
        ""
    } else {
        " (evaluate_rule = false)"
    };
    let plan = match analyzer
        .whole_pipeline(rule, event)
        .and_then(|p| p.plan_undecided())
    {
        Ok(plan) => plan,
        Err(e) => return Ok(format!("✗ {}{state}: {e}\n", rule.name)),
    };
    let mut out = if plan.bounded() {
        format!("✓ {}{state}\n", rule.name)
    } else {
        *unbounded += 1;
        format!(
            "⚠ {}{state}: scans without an index bound (every document its first stages let through)\n",
            rule.name
        )
    };
    if full {
        out.push_str(&plan.to_string());
    }
    Ok(out)
}

/// An event to bind the rules with when none is given: an unhealthy XID on one GPU, now.
fn sample_event() -> Document {
    let doc = json!({
        "_id": "000000000000000000000000",
        "healthevent": {
            "agent": "syslog-health-monitor", "checkname": "SysLogsXIDError",
            "componentclass": "GPU", "nodename": "node-0", "isfatal": true, "ishealthy": false,
            "errorcode": ["79"], "processingstrategy": 1,
            "entitiesimpacted": [{"entitytype": "GPU_UUID", "entityvalue": "GPU-0"}],
            "generatedtimestamp": {"seconds": chrono::Utc::now().timestamp(), "nanos": 0}
        },
        "healtheventstatus": {}
    });
    doc.as_object().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: &str = "../datastore-analyzer/tests/fixtures/nvsentinel-analyzer-values.yaml";

    #[test]
    fn checks_nvsentinels_rules_and_explains_their_plans() {
        let args = RulesCheckArgs {
            values: Some(VALUES.into()),
            toml: None,
            event: None,
            explain: true,
        };
        let out = report(&args).unwrap();
        assert!(out.contains("22 rules parse (22 enabled)"), "{out}");
        assert!(out.contains("scan   "), "{out}");
        assert!(out.contains("healthevent.nodename == \"node-0\""), "{out}");
        // The four $lookup rules' outer scan is narrowed by the registers they test.
        assert!(
            out.contains("healthevent.entitiesimpacted.entityvalue == "),
            "{out}"
        );
        // XID74Reg2Bit13Set names no node or time: the one warning (its verdict still stops
        // at the first document the analyzer's $match admits).
        assert!(out.contains("⚠ XID74Reg2Bit13Set"), "{out}");
        assert!(
            out.contains("21 scan with an index bound, 1 without"),
            "{out}"
        );
    }

    #[test]
    fn a_rule_that_does_not_parse_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("rules-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "[[rules]]\nname = \"Bad\"\nstage = ['{\"$bucket\": {}}']\n",
        )
        .unwrap();
        let args = RulesCheckArgs {
            values: None,
            toml: Some(path),
            event: None,
            explain: false,
        };
        let e = report(&args).unwrap_err().to_string();
        assert!(e.contains("\"Bad\"") && e.contains("$bucket"), "{e}");
    }
}
