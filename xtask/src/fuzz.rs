//! `cargo xtask fuzz --minutes N`: the fuzz properties, optimised, round after round with
//! fresh random cases until the time is up. Each round runs the API's entry points
//! (`conformance/tests/fuzz.rs`, on a 256 KiB stack in this build) and the providers' property
//! (`hostile_documents_round_trip_or_are_refused`, on PostgreSQL and the MongoDB lane). It
//! prints how many cases ran and every distinct failure; the output of failing rounds is kept
//! in `target/fuzz-failures.log`.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{describe, start_postgres, Xtask};

/// Cases per property per round.
const CASES: u32 = 500;

/// Entry-point properties in `conformance/tests/fuzz.rs`.
const ENTRY_POINT_PROPERTIES: u64 = 7;

impl Xtask {
    /// `cargo xtask fuzz --minutes N`.
    pub(crate) fn fuzz(&self, minutes: u64) -> u8 {
        if let Err(code) = self.ensure_mongo_stand_in() {
            return code;
        }
        let server = match start_postgres() {
            Ok(server) => server,
            Err(code) => return code,
        };
        let entry_points = || self.fuzz_test("fuzz", &["--test-threads=2"]);
        let providers = || {
            let mut cmd = self.fuzz_test("conformance", &["--test-threads=1", "hostile_documents"]);
            cmd.env("CONFORMANCE_PROVIDERS", "all");
            server.export(&mut cmd);
            cmd
        };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(minutes.saturating_mul(60));
        let (mut rounds, mut cases) = (0u64, 0u64);
        let mut failures = BTreeSet::new();
        let log = self.root.join("target").join("fuzz-failures.log");
        while rounds == 0 || Instant::now() < deadline {
            for (cmd, ran) in [
                (entry_points(), ENTRY_POINT_PROPERTIES * u64::from(CASES)),
                // Half the cases on each of the two providers.
                (providers(), u64::from(CASES)),
            ] {
                match round(cmd) {
                    Ok(()) => cases += ran,
                    Err(output) => {
                        failures.extend(failure_lines(&output));
                        keep(&log, &output);
                    }
                }
            }
            rounds += 1;
            println!(
                "fuzz: round {rounds}: {cases} cases passed, {} distinct failures, {:.0} s",
                failures.len(),
                started.elapsed().as_secs_f64()
            );
        }
        println!(
            "fuzz: {rounds} rounds in {:.1} min: {cases} cases passed; {} distinct failures",
            started.elapsed().as_secs_f64() / 60.0,
            failures.len()
        );
        for f in &failures {
            println!("  {f}");
        }
        if failures.is_empty() {
            0
        } else {
            println!("fuzz: the failing rounds' output is in {}", log.display());
            1
        }
    }
}

impl Xtask {
    /// `cargo test --release -p conformance --test <test> -- <args>` with [`CASES`] cases.
    fn fuzz_test(&self, test: &str, args: &[&str]) -> Command {
        let mut cmd = self.cargo([
            "test",
            "--release",
            "-p",
            "conformance",
            "--test",
            test,
            "--",
        ]);
        cmd.args(args).env("FUZZ_CASES", CASES.to_string());
        cmd
    }
}

/// Runs one round's command; its output when it fails.
fn round(mut cmd: Command) -> Result<(), String> {
    println!("==> {}", describe(&cmd));
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("could not run: {e}")),
    }
}

/// The lines of `output` that say what failed.
fn failure_lines(output: &str) -> Vec<String> {
    let lines: Vec<String> = output
        .lines()
        .filter(|l| {
            l.contains("panicked")
                || l.contains("overflowed its stack")
                || l.contains("Test failed:")
                || l.contains(" FAILED ")
                || l.contains("could not run")
        })
        .map(|l| l.chars().take(300).collect())
        .collect();
    if lines.is_empty() {
        vec!["a round failed without a recognisable message (see the log)".to_owned()]
    } else {
        lines
    }
}

fn keep(log: &std::path::Path, output: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{output}\n----");
    }
}
