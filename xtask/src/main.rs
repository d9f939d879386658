//! Workspace automation, run as `cargo xtask <command>` (alias in
//! `.cargo/config.toml`).
//!
//! Commands:
//!
//! * `test [--skip-demo]`: fmt check, clippy, workspace tests (all targets,
//!   then doctests, the conformance suite on PostgreSQL and MongoDB) against
//!   one throwaway PostgreSQL and the MongoDB lane `datastore-testkit` picks,
//!   then the demo on each provider.
//! * `conformance [--provider postgresql|mongodb|all]`: the conformance suite.
//! * `bench [args…]`: `cargo run --release -p datastore-bench -- args…`.
//! * `demo [args…]`: `cargo run --release -p datastore-cli -- demo args…`.
//! * `help`: usage.
//!
//! Child commands run from the workspace root with the `cargo` named by the
//! `CARGO` environment variable; their exit codes are propagated.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

mod fuzz;
mod install;

use datastore_testkit::mongo::{StandIn, TestMongo};
use datastore_testkit::postgres::{PgServer, TestPostgres};

/// Usage text for `help` and errors.
const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--skip-demo]      cargo fmt --check, cargo clippy -D warnings, cargo doc
                          (warnings denied), cargo test
                          (all targets, then doctests; conformance on both
                          providers) against one throwaway PostgreSQL (or
                          $DATASTORE_TEST_POSTGRES_URL) and MongoDB (see below),
                          then `datastore-cli demo --events 2000` on PostgreSQL
                          and on MongoDB (unless --skip-demo)
  conformance [--provider postgresql|mongodb|all]
                          run the conformance suite (default: all)
  bench [args...]         cargo run --release -p datastore-bench -- [args...]
  demo [args...]          cargo run --release -p datastore-cli -- demo [args...]
  fuzz [--minutes N]      the fuzz properties, optimised, round after round until N
                          minutes (default 30) have passed; prints the cases run and
                          every distinct failure
  help                    show this text

environment:
  DATASTORE_TEST_POSTGRES_URL  use this server instead of starting one
  PG_BIN_DIR                   directory with the PostgreSQL server binaries
  DATASTORE_TEST_MONGODB_URI   a MongoDB replica set to test against; without
                               it: Docker's mongo:7 if an engine answers, else
                               a stand-in server, installed when missing
  DATASTORE_TEST_MONGODB_STAND_IN
                               secantusdb (default; from PyPI into a venv in
                               target/secantusdb) or jongodb (from npm into
                               target/jongodb)
";

/// Exit code for usage errors.
const USAGE_ERROR: u8 = 2;

/// Providers the conformance suite knows.
const PROVIDERS: [&str; 3] = ["postgresql", "mongodb", "all"];

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    /// Print usage.
    Help,
    /// The full check.
    Test {
        /// Skip the final demo step.
        skip_demo: bool,
    },
    /// The conformance suite for one provider or all.
    Conformance {
        /// `postgresql`, `mongodb` or `all`.
        provider: String,
    },
    /// Benchmarks, with extra arguments passed through.
    Bench(Vec<OsString>),
    /// The demo, with extra arguments passed through.
    Demo(Vec<OsString>),
    /// The fuzz properties for this many minutes.
    Fuzz {
        /// How long to run.
        minutes: u64,
    },
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let task = match parse(args) {
        Ok(task) => task,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{USAGE}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let code = match task {
        Task::Help => {
            print!("{USAGE}");
            0
        }
        Task::Test { skip_demo } => Xtask::new().test(skip_demo),
        Task::Conformance { provider } => Xtask::new().conformance(&provider),
        Task::Bench(args) => Xtask::new().bench(&args),
        Task::Demo(args) => Xtask::new().demo(&args),
        Task::Fuzz { minutes } => Xtask::new().fuzz(minutes),
    };
    ExitCode::from(code)
}

/// Parses the arguments after `cargo xtask`.
fn parse(args: Vec<OsString>) -> Result<Task, String> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Ok(Task::Help);
    };
    let rest: Vec<OsString> = args.collect();
    match command.to_str() {
        Some("help" | "-h" | "--help") => Ok(Task::Help),
        Some("test") => {
            let mut skip_demo = false;
            for arg in &rest {
                match arg.to_str() {
                    Some("--skip-demo") => skip_demo = true,
                    _ => return Err(format!("unknown option for `test`: {arg:?}")),
                }
            }
            Ok(Task::Test { skip_demo })
        }
        Some("conformance") => {
            let mut provider = "all".to_string();
            let mut rest = rest.into_iter();
            while let Some(arg) = rest.next() {
                let value = match arg.to_str() {
                    Some("--provider") => rest
                        .next()
                        .ok_or("`--provider` needs a value")?
                        .to_string_lossy()
                        .into_owned(),
                    Some(other) if other.starts_with("--provider=") => {
                        other["--provider=".len()..].to_string()
                    }
                    _ => return Err(format!("unknown option for `conformance`: {arg:?}")),
                };
                if !PROVIDERS.contains(&value.as_str()) {
                    return Err(format!(
                        "unknown provider `{value}` (expected one of: {})",
                        PROVIDERS.join(", ")
                    ));
                }
                provider = value;
            }
            Ok(Task::Conformance { provider })
        }
        Some("bench") => Ok(Task::Bench(rest)),
        Some("fuzz") => {
            let mut minutes = 30;
            let mut rest = rest.into_iter();
            while let Some(arg) = rest.next() {
                let value = match arg.to_str() {
                    Some("--minutes") => rest.next().ok_or("`--minutes` needs a value")?,
                    _ => return Err(format!("unknown option for `fuzz`: {arg:?}")),
                };
                minutes = value
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("`--minutes` takes a whole number, not {value:?}"))?;
            }
            Ok(Task::Fuzz { minutes })
        }
        Some("demo") => Ok(Task::Demo(rest)),
        _ => Err(format!("unknown command {command:?}")),
    }
}

/// Whether the environment variable `name` is set and not empty.
fn set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Runs child commands from the workspace root.
struct Xtask {
    cargo: OsString,
    root: PathBuf,
}

/// A PostgreSQL server for the child commands: the URL to export (if we
/// started one) and the server itself, kept alive while this value lives.
struct TestServer {
    url: Option<String>,
    _server: Option<PgServer>,
}

impl Xtask {
    fn new() -> Xtask {
        let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .map(PathBuf::from)
            .unwrap_or(manifest_dir);
        Xtask {
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")),
            root,
        }
    }

    /// `cargo <args>` in the workspace root.
    fn cargo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(args).current_dir(&self.root);
        cmd
    }

    /// `cargo xtask test`.
    /// Fails when `datastore-cli` without its `demo` feature depends, at run time, on a
    /// crate that starts test servers.
    fn production_links_no_test_servers(&self) -> Result<(), u8> {
        let mut tree = self.cargo([
            "tree",
            "-p",
            "datastore-cli",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ]);
        println!("==> {}", describe(&tree));
        let out = tree.output().map_err(|e| {
            eprintln!("xtask: could not run cargo tree: {e}");
            1u8
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let linked: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("datastore-testkit") || l.starts_with("datastore-workload"))
            .collect();
        if !out.status.success() || !linked.is_empty() {
            eprintln!(
                "xtask: the production `datastore` binary (no `demo` feature) must link no test-server code; it links: {linked:?}"
            );
            return Err(1);
        }
        Ok(())
    }

    fn test(&self, skip_demo: bool) -> u8 {
        let started = Instant::now();
        let steps: [&[&str]; 2] = [
            &["fmt", "--all", "--", "--check"],
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ];
        for args in steps {
            if let Err(code) = run_step(self.cargo(args)) {
                return code;
            }
        }
        // The Docker lanes (testcontainers) cannot run here (no engine); compile and lint them.
        let docker_lanes = [
            "clippy",
            "-p",
            "datastore-testkit",
            "--features",
            "datastore-testkit/docker,datastore-testkit/tls",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ];
        if let Err(code) = run_step(self.cargo(docker_lanes)) {
            return code;
        }
        // A production build of the `datastore` command (no `demo`) compiles cleanly and
        // links no test-server code.
        let production = [
            "clippy",
            "-p",
            "datastore-cli",
            "--no-default-features",
            "--",
            "-D",
            "warnings",
        ];
        if let Err(code) = run_step(self.cargo(production)) {
            return code;
        }
        if let Err(code) = self.production_links_no_test_servers() {
            return code;
        }
        // Rustdoc warnings (broken or ambiguous links) fail the run like clippy's.
        let mut doc = self.cargo(["doc", "--no-deps", "--workspace"]);
        doc.env("RUSTDOCFLAGS", "-D warnings");
        if let Err(code) = run_step(doc) {
            return code;
        }

        if let Err(code) = install::ensure(&self.test_packages(skip_demo)) {
            return code;
        }
        if let Err(code) = self.ensure_mongo_stand_in() {
            return code;
        }
        let server = match start_postgres() {
            Ok(server) => server,
            Err(code) => return code,
        };
        // The conformance suite runs apart, with its output shown: its table of passed /
        // failed / not run properties per provider belongs in the log.
        let test_steps: [&[&str]; 3] = [
            &[
                "test",
                "--workspace",
                "--all-targets",
                "--exclude",
                "conformance",
            ],
            &[
                "test",
                "-p",
                "conformance",
                "--all-targets",
                "--",
                "--nocapture",
                "--test-threads=1",
            ],
            &["test", "--workspace", "--doc"],
        ];
        for args in test_steps {
            let mut cmd = self.cargo(args);
            server.export(&mut cmd);
            cmd.env("CONFORMANCE_PROVIDERS", "all");
            if let Err(code) = run_step(cmd) {
                return code;
            }
        }
        // The demo starts its own server; stop ours first to free resources.
        drop(server);

        if skip_demo {
            println!("==> demo skipped (--skip-demo)");
        } else {
            for provider in ["postgresql", "mongodb"] {
                let mut cmd = self.cargo([
                    "run",
                    "--quiet",
                    "-p",
                    "datastore-cli",
                    "--",
                    "demo",
                    "--events",
                    "2000",
                ]);
                clear_connection_env(&mut cmd);
                cmd.env("DATASTORE_PROVIDER", provider);
                if let Err(code) = run_step(cmd) {
                    return code;
                }
            }
        }
        println!("    total time {:.0?}", started.elapsed());
        println!("xtask test: all steps passed");
        0
    }

    /// The MongoDB stand-in this run must install: the tests or the demo will need it (no
    /// MongoDB URI is given, no binary is named by its variable) and it is not installed yet.
    fn stand_in_to_install(&self) -> Result<Option<StandIn>, u8> {
        if set(TestMongo::URI_ENV) || set(TestMongo::FALLBACK_URI_ENV) {
            return Ok(None);
        }
        let kind = StandIn::from_env().map_err(|e| {
            eprintln!("xtask: {e}");
            USAGE_ERROR
        })?;
        if set(kind.bin_env()) || kind.default_binary().is_file() {
            return Ok(None);
        }
        Ok(Some(kind))
    }

    /// Installs the chosen MongoDB stand-in when it is needed and missing, with the Debian
    /// packages it needs first: SecantusDB goes into a Python venv, jongodb into an npm
    /// prefix, both under `target/`.
    fn ensure_mongo_stand_in(&self) -> Result<(), u8> {
        let Some(kind) = self.stand_in_to_install()? else {
            return Ok(());
        };
        if kind == StandIn::SecantusDb
            && !install::succeeds(Command::new("python3").args(["-c", "import ensurepip, venv"]))
        {
            install::ensure(&[install::PYTHON_VENV])?;
        }
        println!(
            "==> installing the MongoDB stand-in {kind} ({})",
            kind.install_command()
        );
        let commands = match kind {
            StandIn::SecantusDb => {
                let venv = self.root.join("target/secantusdb");
                let mut create = Command::new("python3");
                create.args(["-m", "venv"]).arg(&venv);
                let mut install = Command::new(venv.join("bin/pip"));
                install
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(kind.package());
                vec![create, install]
            }
            StandIn::Jongodb => {
                let mut install = Command::new("npm");
                install
                    .args(["install", "--no-save", "--prefix", "target/jongodb"])
                    .arg(kind.package());
                vec![install]
            }
        };
        for mut cmd in commands {
            cmd.current_dir(&self.root);
            run_step(cmd).inspect_err(|_| {
                eprintln!(
                    "xtask: could not install the {kind} stand-in; install it with `{}` or set {} to a MongoDB replica set",
                    kind.install_command(),
                    TestMongo::URI_ENV
                );
            })?;
        }
        Ok(())
    }

    /// The Debian packages `cargo xtask test` needs and this machine lacks.
    fn test_packages(&self, skip_demo: bool) -> Vec<install::Package> {
        let mut packages = Vec::new();
        // The demo always starts its own server; the tests do unless given one.
        let given_a_server = set(TestPostgres::ENV) && skip_demo;
        if !(PgServer::binaries_installed() || given_a_server) {
            packages.push(install::POSTGRESQL);
        }
        if !install::succeeds(Command::new("socat").arg("-V")) {
            packages.push(install::SOCAT);
        }
        packages
    }

    /// `cargo xtask demo`: installs what the demo's own server needs when the environment
    /// names none (as `DatastoreConfig::env_names_a_server` decides), then runs it.
    fn demo(&self, args: &[OsString]) -> u8 {
        let names_a_server = ["DATASTORE_HOST", "DATASTORE_CONFIG_FILE", "MONGODB_URI"]
            .into_iter()
            .any(set);
        if !names_a_server {
            let mongodb = std::env::var("DATASTORE_PROVIDER").is_ok_and(|p| p == "mongodb");
            let ready = if mongodb {
                self.ensure_mongo_stand_in()
            } else if PgServer::binaries_installed() {
                Ok(())
            } else {
                install::ensure(&[install::POSTGRESQL])
            };
            if let Err(code) = ready {
                return code;
            }
        }
        self.datastore_cli("demo", args)
    }

    /// `cargo xtask conformance --provider …`.
    fn conformance(&self, provider: &str) -> u8 {
        if provider != "postgresql" {
            if let Err(code) = self.ensure_mongo_stand_in() {
                return code;
            }
        }
        let server = if provider == "mongodb" {
            TestServer::none()
        } else {
            match start_postgres() {
                Ok(server) => server,
                Err(code) => return code,
            }
        };
        let mut cmd = self.cargo([
            "test",
            "-p",
            "conformance",
            "--test",
            "conformance",
            "--",
            "--nocapture",
            "--test-threads=1",
        ]);
        cmd.env("CONFORMANCE_PROVIDERS", provider);
        server.export(&mut cmd);
        match run_step(cmd) {
            Ok(()) => 0,
            Err(code) => code,
        }
    }

    /// `cargo run --release -p datastore-bench -- args…`.
    fn bench(&self, args: &[OsString]) -> u8 {
        let mut cmd = self.cargo(["run", "--release", "-p", "datastore-bench", "--"]);
        cmd.args(args);
        match run_step(cmd) {
            Ok(()) => 0,
            Err(code) => code,
        }
    }

    /// `cargo run --release -p datastore-cli -- <subcommand> args…`.
    fn datastore_cli(&self, subcommand: &str, args: &[OsString]) -> u8 {
        let mut cmd = self.cargo(["run", "--release", "-p", "datastore-cli", "--", subcommand]);
        cmd.args(args);
        match run_step(cmd) {
            Ok(()) => 0,
            Err(code) => code,
        }
    }
}

impl TestServer {
    fn none() -> TestServer {
        TestServer {
            url: None,
            _server: None,
        }
    }

    /// Sets `DATASTORE_TEST_POSTGRES_URL` for `cmd` if we started a server
    /// (an external URL is inherited from our environment unchanged).
    fn export(&self, cmd: &mut Command) {
        if let Some(url) = &self.url {
            cmd.env(TestPostgres::ENV, url);
            // Ours, not the user's: the conformance suite may still start its TLS server.
            cmd.env(TestPostgres::THROWAWAY_ENV, "1");
        }
    }
}

/// Starts one throwaway PostgreSQL unless `DATASTORE_TEST_POSTGRES_URL` is
/// set (non-empty).
fn start_postgres() -> Result<TestServer, u8> {
    if set(TestPostgres::ENV) {
        println!(
            "==> using the external PostgreSQL named by {}",
            TestPostgres::ENV
        );
        return Ok(TestServer::none());
    }
    println!("==> start PostgreSQL (datastore-testkit)");
    let started = Instant::now();
    match PgServer::start() {
        Ok(server) => {
            let url = server.url("postgres");
            println!(
                "    ready in {:.1?}: {}={url} (data: {})",
                started.elapsed(),
                TestPostgres::ENV,
                server.data_dir().display()
            );
            Ok(TestServer {
                url: Some(url),
                _server: Some(server),
            })
        }
        Err(error) => {
            eprintln!("xtask: could not start PostgreSQL: {error}");
            Err(1)
        }
    }
}

/// Removes connection settings so the demo starts its own server:
/// every `DATASTORE_*` and `MONGODB_*` variable and the libpq `PG*` connection variables.
fn clear_connection_env(cmd: &mut Command) {
    const LIBPQ: [&str; 6] = [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
    ];
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("DATASTORE_")
            || name.starts_with("MONGODB_")
            || LIBPQ.contains(&name.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
}

/// Prints a `==> …` header, runs `cmd` and maps failure to an exit code.
fn run_step(mut cmd: Command) -> Result<(), u8> {
    println!("==> {}", describe(&cmd));
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => {
            let code = exit_code(status);
            eprintln!("xtask: `{}` failed ({status})", describe(&cmd));
            Err(code)
        }
        Err(error) => {
            eprintln!("xtask: could not run `{}`: {error}", describe(&cmd));
            Err(1)
        }
    }
}

/// The exit code to propagate for a failed child (128 + signal if killed).
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).ok().filter(|c| *c != 0).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

/// `cargo fmt --all -- --check` style rendering (program name shortened).
fn describe(cmd: &Command) -> String {
    let program = PathBuf::from(cmd.get_program());
    let program = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cargo".to_string());
    let mut parts = vec![program];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(args(&[])), Ok(Task::Help));
        assert_eq!(parse(args(&["help"])), Ok(Task::Help));
        assert_eq!(parse(args(&["test"])), Ok(Task::Test { skip_demo: false }));
        assert_eq!(
            parse(args(&["test", "--skip-demo"])),
            Ok(Task::Test { skip_demo: true })
        );
        assert!(parse(args(&["test", "--bogus"])).is_err());
        assert!(parse(args(&["frobnicate"])).is_err());
    }

    #[test]
    fn parses_conformance_provider() {
        let conformance = |p: &str| {
            Ok(Task::Conformance {
                provider: p.to_string(),
            })
        };
        assert_eq!(parse(args(&["conformance"])), conformance("all"));
        assert_eq!(
            parse(args(&["conformance", "--provider", "postgresql"])),
            conformance("postgresql")
        );
        assert_eq!(
            parse(args(&["conformance", "--provider=mongodb"])),
            conformance("mongodb")
        );
        assert!(parse(args(&["conformance", "--provider", "oracle"])).is_err());
        assert!(parse(args(&["conformance", "--provider"])).is_err());
    }

    #[test]
    fn passes_extra_args_through() {
        assert_eq!(
            parse(args(&["bench", "--events", "10", "--", "x"])),
            Ok(Task::Bench(args(&["--events", "10", "--", "x"])))
        );
        assert_eq!(parse(args(&["demo"])), Ok(Task::Demo(vec![])));
    }

    #[test]
    fn exit_codes_propagate() {
        use std::os::unix::process::ExitStatusExt;
        let exited = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(exit_code(exited(3)), 3);
        assert_eq!(exit_code(exited(101)), 101);
        // Killed by SIGKILL (9).
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137);
    }
}
