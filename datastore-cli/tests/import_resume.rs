//! `datastore import` killed part-way (SIGKILL, mid-batch) and run again finishes the job with
//! nothing imported twice; `--verify` then finds the store identical to the file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DOCUMENTS: u64 = 40_000;

fn count(rt: &tokio::runtime::Runtime, url: &str) -> i64 {
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        let n = sqlx::query_scalar("SELECT count(*) FROM health_events")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        pool.close().await;
        n
    })
}

#[test]
fn a_killed_import_finishes_when_run_again() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = datastore_testkit::postgres::PgServer::start().expect("PostgreSQL");
    rt.block_on(provider_postgres::create_database(
        &server.url("postgres"),
        "nvsentinel",
    ))
    .expect("database");
    let url = server.url("nvsentinel");
    let dir = std::env::temp_dir().join(format!("import-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("HealthEvents.json");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
    for i in 0..DOCUMENTS {
        writeln!(
            file,
            r#"{{"_id":{{"$oid":"6b105a82bd0eee37{i:08x}"}},"createdAt":{{"$date":{{"$numberLong":"{}"}}}},"healthevent":{{"nodename":"node-{}","checkname":"GpuXidError","errorcode":["{}"],"isfatal":{}}}}}"#,
            1_767_323_045_000_u64 + i,
            i % 100,
            i % 7,
            i % 3 == 0
        )
        .expect("write");
    }
    drop(file);
    let port = server.port().to_string();
    let datastore = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_datastore"));
        cmd.env_clear()
            .envs([
                ("DATASTORE_PROVIDER", "postgresql"),
                ("DATASTORE_HOST", "127.0.0.1"),
                ("DATASTORE_PORT", port.as_str()),
                ("DATASTORE_USERNAME", "postgres"),
                ("DATASTORE_SSLMODE", "disable"),
                ("DATASTORE_DATABASE", "nvsentinel"),
            ])
            .arg("import")
            .arg(&path)
            .args(args);
        cmd
    };

    // Killed once some batches are in.
    let mut child = datastore(&["--batch", "500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the import");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if count(&rt, &url) >= 1_000 {
            child.kill().expect("kill");
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the import finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no batch committed in 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait().expect("reap");
    let killed_at = count(&rt, &url);
    assert!(
        (1_000..DOCUMENTS as i64).contains(&killed_at),
        "killed with {killed_at} stored"
    );

    // Run again: the rest, nothing twice.
    let out = datastore(&["--json"]).output().expect("re-run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(summary["read"], DOCUMENTS);
    assert_eq!(summary["present"], killed_at);
    assert_eq!(summary["inserted"], DOCUMENTS as i64 - killed_at);
    assert_eq!(count(&rt, &url), DOCUMENTS as i64);

    let out = datastore(&["--verify", "--json"]).output().expect("verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let verified: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(verified["identical"], DOCUMENTS);
    std::fs::remove_dir_all(dir).expect("clean up");
}
