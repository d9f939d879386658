//! Connecting to a port that accepts and never answers ends at `DATASTORE_CONNECT_TIMEOUT`,
//! as it does on PostgreSQL, with an error that names the setting (and, with TLS required,
//! the likely cause).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use std::net::TcpListener;
use std::time::{Duration, Instant};

use provider_mongo::{MongoDataStore, MongoSettings};

/// A loopback port that accepts connections and never says anything.
fn silent_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

#[tokio::test]
async fn connecting_to_a_silent_server_ends_at_the_connect_timeout() {
    let port = silent_port();
    for require_tls in [false, true] {
        let mut settings =
            MongoSettings::from_uri(&format!("mongodb://127.0.0.1:{port}/"), "timeout");
        settings.connect_timeout = Duration::from_secs(1);
        settings.require_tls = require_tls;
        let started = Instant::now();
        let e = match MongoDataStore::connect_with(&settings).await {
            Ok(_) => panic!("connected to a silent port"),
            Err(e) => e,
        };
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}: {e}");
        assert!(e.message().contains("DATASTORE_CONNECT_TIMEOUT"), "{e}");
        if require_tls {
            assert!(e.message().contains("TLS"), "{e}");
        }
    }
}
