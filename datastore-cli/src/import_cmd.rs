//! `datastore import FILE`: `mongoexport` output into the configured store (see
//! [`datastore_tools::import`]), with a progress bar, the rejections and a summary; exit code 1
//! when anything was rejected or, with `--verify`, differs. `ResumeTokens` are reported as not
//! portable.

use std::time::Instant;

use datastore::DataStore;
use datastore_tools::error::{CliError, CliResult};
use datastore_tools::import::{self, Options, Summary};
use serde_json::json;

use crate::cli::{ImportArgs, ImportTarget, Target};
use crate::select;

/// Opens the configured store and imports (or verifies) `args.file`.
pub async fn run(args: &ImportArgs) -> CliResult<()> {
    if args.collection == ImportTarget::ResumeTokens {
        datastore_tools::output::print(&import::resume_tokens(&args.file).await?)?;
        return Ok(());
    }
    let store = datastore::connect_from_env().await?;
    let started = Instant::now();
    let outcome = import_on(store.as_ref(), args, true).await;
    store.close().await;
    let summary = outcome?;
    datastore_tools::output::print(&describe(&summary, args))?;
    if !args.json {
        let secs = started.elapsed().as_secs_f64();
        datastore_tools::output::print(&format!(
            "  in {secs:.1} s: {:.0} documents/s\n",
            summary.read as f64 / secs.max(1e-9)
        ))?;
    }
    let problems = summary.rejected_count
        + summary.conflict_count
        + summary.missing_count
        + summary.different_count
        + summary.extra_in_store;
    if problems > 0 {
        return Err(CliError::check(format!(
            "{problems} documents were rejected, conflict with what is stored, or differ: see \
             the lines above"
        )));
    }
    Ok(())
}

/// Imports (or verifies) `args.file` into the collection `args` names on `store`.
async fn import_on(
    store: &dyn DataStore,
    args: &ImportArgs,
    show_progress: bool,
) -> CliResult<Summary> {
    let target = match args.collection {
        ImportTarget::HealthEvents => Target::HealthEvents,
        ImportTarget::MaintenanceEvents => Target::MaintenanceEvents,
        ImportTarget::ResumeTokens => {
            return Err(CliError::check("ResumeTokens are reported, not imported"))
        }
    };
    let options = Options {
        file: args.file.clone(),
        batch: args.batch as usize,
        verify: args.verify,
        show_progress,
    };
    import::run_on(select::collection(store, target), &options).await
}

/// The run's report: text, or JSON with `--json`.
pub fn describe(s: &Summary, args: &ImportArgs) -> String {
    if args.json {
        let rejected: Vec<_> = s
            .rejected
            .iter()
            .map(|(at, why)| json!({"at": at.to_string(), "reason": why}))
            .collect();
        return format!(
            "{}\n",
            json!({
                "file": args.file.display().to_string(),
                "read": s.read, "inserted": s.inserted, "present": s.present,
                "rejected": s.rejected_count, "rejections": rejected,
                "conflicts": s.conflict_count,
                "conflicting": s.conflicts.iter().map(|(at, why)| json!({"at": at.to_string(), "reason": why})).collect::<Vec<_>>(),
                "identical": s.identical, "missing": s.missing_count, "different": s.different_count,
                "missing_ids": s.missing, "different_ids": s.different,
                "extra_in_store": s.extra_in_store,
            })
        );
    }
    if args.verify {
        let mut out = String::new();
        for id in s.missing.iter().take(100) {
            out.push_str(&format!("verify: {id}: in the file, not in the store\n"));
        }
        for id in s.different.iter().take(100) {
            out.push_str(&format!("verify: {id}: stored with other contents\n"));
        }
        out.push_str(&format!(
            "verified {} documents of {}: {} identical, {} missing, {} different, {} rejected; \
             the store holds {} documents the file does not\n",
            s.read,
            args.file.display(),
            s.identical,
            s.missing_count,
            s.different_count,
            s.rejected_count,
            s.extra_in_store
        ));
        return out;
    }
    let mut out = String::new();
    for (at, why) in s.conflicts.iter().take(100) {
        out.push_str(&format!("import: {at}: conflict: {why}\n"));
    }
    out.push_str(&format!(
        "imported {} of {} documents from {} ({} already stored, {} conflicting, {} rejected)\n",
        s.inserted,
        s.read,
        args.file.display(),
        s.present,
        s.conflict_count,
        s.rejected_count
    ));
    out
}

#[cfg(test)]
#[path = "import_cmd_tests.rs"]
mod tests;
