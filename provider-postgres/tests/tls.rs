//! libpq's sslmodes, certificate authentication, connect timeouts and TLS-file problems against
//! real servers: a TLS-only server set up as the spec says (datastore-testkit `tls`), and the plain
//! throwaway server for the "server without TLS" rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use datastore_api::{DataStore, DatastoreConfig, Error, ErrorKind};
use datastore_testkit::postgres::tls::{ServerCert, TlsServer, CERT_USER, SERVER_NAME};
use datastore_testkit::postgres::TestPostgres;
use provider_postgres::PgDataStore;

fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| TlsServer::start(ServerCert::Valid).expect("TLS test server"))
}

/// A fresh database on `server` that the certificate user may use (the spec's grants).
async fn fresh_db(server: &TlsServer) -> String {
    use sqlx::Connection;
    let name = provider_postgres::fresh_test_database(&server.admin_url("postgres"))
        .await
        .expect("database");
    let mut conn = sqlx::PgConnection::connect(&server.admin_url(&name))
        .await
        .expect("admin connection");
    for sql in TlsServer::spec_grants(&name) {
        sqlx::query(&sql).execute(&mut conn).await.expect(&sql);
    }
    name
}

/// Settings for `host`/`port` with `extra` variables on top.
fn config(host: &str, port: u16, db: &str, extra: &[(&str, &Path)], mode: &str) -> DatastoreConfig {
    let mut vars: std::collections::HashMap<String, String> = [
        ("DATASTORE_PROVIDER", "postgresql".to_owned()),
        ("DATASTORE_HOST", host.to_owned()),
        ("DATASTORE_PORT", port.to_string()),
        ("DATASTORE_DATABASE", db.to_owned()),
        ("DATASTORE_USERNAME", CERT_USER.to_owned()),
        ("DATASTORE_SSLMODE", mode.to_owned()),
        ("DATASTORE_CONNECT_TIMEOUT", "2s".to_owned()),
        ("DATASTORE_MAX_CONNECTIONS", "4".to_owned()),
        ("DATASTORE_MAX_IDLE_CONNECTIONS", "4".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), v.display().to_string());
    }
    DatastoreConfig::from_vars(&vars).expect("config")
}

/// The client certificate, its key and `root` as the CA.
fn client_files<'a>(server: &'a TlsServer, root: &'a Path) -> Vec<(&'static str, &'a Path)> {
    let f = server.files();
    vec![
        ("DATASTORE_SSLCERT", f.client_cert.as_path()),
        ("DATASTORE_SSLKEY", f.client_key.as_path()),
        ("DATASTORE_SSLROOTCERT", root),
    ]
}

async fn connect(config: &DatastoreConfig) -> Result<PgDataStore, Error> {
    PgDataStore::connect(config).await
}

fn assert_config_error(result: Result<PgDataStore, Error>, needle: &str) -> Error {
    let err = result.expect_err("must not connect");
    eprintln!("refused as expected: {err}");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains(needle),
        "{err:?} should say {needle:?}"
    );
    err
}

/// The TLS session the server sees for this store's connections.
async fn session(store: &PgDataStore) -> (bool, String, String) {
    sqlx::query_as(
        "SELECT s.ssl, coalesce(s.client_dn, ''), current_user::text FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
    )
    .fetch_one(store.pool())
    .await
    .expect("pg_stat_ssl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_certificate_auth_as_the_spec_role() {
    let server = tls_server();
    let db = fresh_db(server).await;
    let files = client_files(server, &server.files().ca);
    let store = connect(&config(
        SERVER_NAME,
        server.port(),
        &db,
        &files,
        "verify-full",
    ))
    .await
    .expect("verify-full against localhost");
    let (ssl, dn, user) = session(&store).await;
    assert!(ssl, "the session must be TLS");
    assert!(dn.contains(&format!("CN={CERT_USER}")), "client DN {dn}");
    assert_eq!(user, CERT_USER);
    // Every session carries the server-side statement timeout (default 60 s).
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(timeout, "1min");
    // The store works as the non-superuser role (migrations ran under the spec's grants).
    store.ping().await.unwrap();
    store
        .health_events()
        .find_latest_event_for_node("n")
        .await
        .unwrap();

    // verify-full checks the name: the certificate names localhost only.
    assert_config_error(
        connect(&config(
            "127.0.0.1",
            server.port(),
            &db,
            &files,
            "verify-full",
        ))
        .await,
        "does not name host",
    );
    // verify-ca does not (sqlx 0.8 refused this).
    connect(&config(
        "127.0.0.1",
        server.port(),
        &db,
        &files,
        "verify-ca",
    ))
    .await
    .expect("verify-ca skips the host name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_certificate_is_the_only_trust_anchor() {
    let server = tls_server();
    let db = fresh_db(server).await;
    let other = server.files().other_ca.clone();
    for mode in ["verify-ca", "verify-full", "require"] {
        // require with a root certificate verifies like verify-ca (libpq).
        let err = assert_config_error(
            connect(&config(
                SERVER_NAME,
                server.port(),
                &db,
                &client_files(server, &other),
                mode,
            ))
            .await,
            "not signed by the CA in DATASTORE_SSLROOTCERT",
        );
        assert!(err.to_string().contains("other-ca.crt"), "{err}");
    }
    // require without a root certificate does not verify the server.
    let f = server.files();
    let no_root = [
        ("DATASTORE_SSLCERT", f.client_cert.as_path()),
        ("DATASTORE_SSLKEY", f.client_key.as_path()),
    ];
    let store = connect(&config(
        "127.0.0.1",
        server.port(),
        &db,
        &no_root,
        "require",
    ))
    .await
    .expect("require without a root certificate");
    assert!(session(&store).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused_when_verified() {
    let server = TlsServer::start(ServerCert::Expired).expect("server with an expired cert");
    let db = fresh_db(&server).await;
    let files = client_files(&server, &server.files().ca);
    for mode in ["verify-ca", "verify-full", "require"] {
        assert_config_error(
            connect(&config(SERVER_NAME, server.port(), &db, &files, mode)).await,
            "has expired",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_the_server_refuses() {
    let server = tls_server();
    let db = fresh_db(server).await;
    let f = server.files();
    let with_client = |cert: &Path, key: &Path| {
        let files = [
            ("DATASTORE_SSLCERT", cert),
            ("DATASTORE_SSLKEY", key),
            ("DATASTORE_SSLROOTCERT", f.ca.as_path()),
        ];
        config(SERVER_NAME, server.port(), &db, &files, "verify-full")
    };
    // Signed by a CA the server does not trust: refused in the handshake.
    assert_config_error(
        connect(&with_client(&f.foreign_cert, &f.foreign_key)).await,
        "refused the client certificate DATASTORE_SSLCERT",
    );
    // Trusted, but its CN is not the user: PostgreSQL's certificate authentication fails.
    assert_config_error(
        connect(&with_client(&f.intruder_cert, &f.intruder_key)).await,
        "certificate",
    );
    // No client certificate at all.
    let none = [("DATASTORE_SSLROOTCERT", f.ca.as_path())];
    let err = connect(&config(
        SERVER_NAME,
        server.port(),
        &db,
        &none,
        "verify-full",
    ))
    .await
    .expect_err("no client certificate");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_tls_only_server() {
    let server = tls_server();
    let db = fresh_db(server).await;
    let files = client_files(server, &server.files().ca);
    // disable: the server has no plaintext line for the role.
    let err = connect(&config(SERVER_NAME, server.port(), &db, &files, "disable"))
        .await
        .expect_err("plaintext must be refused");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("no encryption"), "{err}");
    // allow: plaintext is refused, so libpq retries with TLS; prefer: TLS first.
    for mode in ["allow", "prefer"] {
        let store = connect(&config(SERVER_NAME, server.port(), &db, &files, mode))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(session(&store).await.0, "{mode} must end up on TLS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_server_without_tls() {
    if !TestPostgres::may_start_servers() {
        return;
    }
    let plain = datastore_testkit::postgres::PgServer::start().expect("plain PostgreSQL");
    let port = plain.port();
    let vars = |mode: &str| {
        let mut c = config("127.0.0.1", port, "postgres", &[], mode);
        c.connection.username = "postgres".into();
        c
    };
    for mode in ["require"] {
        assert_config_error(connect(&vars(mode)).await, "does not accept TLS");
    }
    for mode in ["disable", "allow", "prefer"] {
        let store = connect(&vars(mode))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(!ssl);
    }
    // allow and prefer report the server's own refusal, not the fallback's ("no TLS").
    for mode in ["allow", "prefer"] {
        let mut c = vars(mode);
        c.connection.database = "no_such_database".into();
        let err = connect(&c).await.expect_err("no such database");
        assert!(err.to_string().contains("does not exist"), "{mode}: {err}");
    }
    // verify-ca and verify-full without a CA: refused before connecting.
    for mode in ["verify-ca", "verify-full"] {
        assert_config_error(connect(&vars(mode)).await, "DATASTORE_SSLROOTCERT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_closed_port_fails_fast_and_says_why() {
    // Accepts TCP connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    for mode in ["disable", "require", "prefer"] {
        let started = Instant::now();
        let err = connect(&config("127.0.0.1", port, "x", &[], mode))
            .await
            .expect_err("nobody answers");
        assert!(err.is_retryable(), "{mode}: {err}");
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("DATASTORE_CONNECT_TIMEOUT"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "{mode}: {:?}",
            started.elapsed()
        );
    }
    drop(silent);
    for mode in ["disable", "require"] {
        let started = Instant::now();
        let err = connect(&config("127.0.0.1", port, "x", &[], mode))
            .await
            .expect_err("refused");
        assert!(err.is_retryable(), "{mode}: {err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// A private copy of the client files, to break and rotate.
fn copy_files(server: &TlsServer, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tls-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = server.files();
    let (cert, key, ca) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"));
    std::fs::copy(&f.client_cert, &cert).unwrap();
    std::fs::copy(&f.client_key, &key).unwrap();
    std::fs::copy(&f.ca, &ca).unwrap();
    (cert, key, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_named_and_explained() {
    let server = tls_server();
    let (cert, key, ca) = copy_files(server, "bad");
    let files = |c: &Path, k: &Path, r: &Path| {
        config(
            SERVER_NAME,
            server.port(),
            "x",
            &[
                ("DATASTORE_SSLCERT", c),
                ("DATASTORE_SSLKEY", k),
                ("DATASTORE_SSLROOTCERT", r),
            ],
            "verify-full",
        )
    };
    // A key where the certificate belongs, and the other way round.
    assert_config_error(connect(&files(&key, &key, &ca)).await, "DATASTORE_SSLCERT");
    assert_config_error(
        connect(&files(&key, &key, &ca)).await,
        "holds a private key, not a certificate",
    );
    assert_config_error(
        connect(&files(&cert, &cert, &ca)).await,
        "holds a certificate, not a private key",
    );
    // A root certificate file with no certificate in it.
    let empty = cert.with_file_name("empty.crt");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let err = assert_config_error(
        connect(&files(&cert, &key, &empty)).await,
        "holds no certificate",
    );
    assert!(err.to_string().contains("DATASTORE_SSLROOTCERT"), "{err}");
    // An encrypted key: says how to decrypt it.
    let encrypted = key.with_file_name("encrypted.key");
    let made = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:secret",
            "-in",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBAA==\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
    }
    let err = assert_config_error(connect(&files(&cert, &encrypted, &ca)).await, "encrypted");
    assert!(err.to_string().contains("openssl pkey"), "{err}");
    assert!(err.to_string().contains("encrypted.key"), "{err}");
    // A missing file: the variable and the path.
    let mut vars: std::collections::HashMap<String, String> = [
        ("DATASTORE_PROVIDER", "postgresql"),
        ("DATASTORE_HOST", "h"),
        ("DATASTORE_USERNAME", "u"),
        ("DATASTORE_SSLROOTCERT", "/nonexistent/ca.crt"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let err = DatastoreConfig::from_vars(&vars).unwrap_err();
    assert!(
        err.to_string().contains("DATASTORE_SSLROOTCERT")
            && err.to_string().contains("/nonexistent/ca.crt"),
        "{err}"
    );
    vars.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_are_read_by_new_connections_and_a_broken_pair_keeps_the_last_good_one() {
    use std::os::unix::fs::PermissionsExt;
    let server = tls_server();
    let db = fresh_db(server).await;
    let (cert, key, ca) = copy_files(server, "rotate");
    // A group- and world-readable key (a Kubernetes secret volume) is accepted, with a warning.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let settings = config(
        SERVER_NAME,
        server.port(),
        &db,
        &[
            ("DATASTORE_SSLCERT", cert.as_path()),
            ("DATASTORE_SSLKEY", key.as_path()),
            ("DATASTORE_SSLROOTCERT", ca.as_path()),
        ],
        "verify-full",
    );
    let store = connect(&settings).await.expect("connect");
    let f = server.files();

    // Half a rotation: a new certificate whose key is not there yet. New connections keep
    // the last good pair.
    std::fs::copy(&f.intruder_cert, &cert).unwrap();
    let fresh = fresh_connection_user(&store)
        .await
        .expect("the last good pair is kept");
    assert_eq!(fresh, CERT_USER);

    // The rotation completes (to the intruder's pair here, which the server refuses for this
    // user): new connections use the new files at once.
    std::fs::copy(&f.intruder_key, &key).unwrap();
    assert!(
        fresh_connection_user(&store).await.is_err(),
        "new files must be used"
    );

    // Back to the right pair: new connections work again.
    std::fs::copy(&f.client_cert, &cert).unwrap();
    std::fs::copy(&f.client_key, &key).unwrap();
    assert_eq!(fresh_connection_user(&store).await.unwrap(), CERT_USER);
}

/// Opens one more connection of the store's pool (besides an idle one) and asks who it is.
async fn fresh_connection_user(store: &PgDataStore) -> Result<String, sqlx::Error> {
    let pool = store.pool();
    let mut held = Vec::new();
    while pool.num_idle() > 0 {
        held.push(pool.acquire().await?);
    }
    let mut conn = tokio::time::timeout(Duration::from_secs(10), pool.acquire())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *conn)
        .await?;
    conn.close_on_drop();
    drop(held);
    Ok(user)
}
