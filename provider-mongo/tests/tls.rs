//! The MongoDB client-certificate handshake end to end: the test server behind a TLS proxy
//! (Debian's `socat`, since neither stand-in speaks TLS) that requires a client certificate
//! signed by the test CA, reached with the provider's TLS settings.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datastore_api::ErrorKind;
use datastore_testkit::mongo::{unique_database_name, TestMongo};
use provider_mongo::{MongoDataStore, MongoSettings};
use test_certs::{Authority, Validity};

/// A `socat` TLS listener in front of the test server; killed on drop.
struct TlsProxy {
    child: Child,
    port: u16,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `host:port` of the test server's URI.
fn upstream(uri: &str) -> String {
    let rest = uri.trim_start_matches("mongodb://");
    let hosts = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = hosts.split(',').next().unwrap_or(hosts);
    host.rsplit_once('@').map_or(host, |(_, h)| h).to_owned()
}

fn start_proxy(dir: &Path, upstream: &str) -> TlsProxy {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=1",
        dir.join("server.crt").display(),
        dir.join("server.key").display(),
        dir.join("ca.crt").display()
    );
    let child = Command::new("socat")
        .arg(listen)
        .arg(format!("TCP:{upstream}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("socat is needed for the MongoDB TLS test (apt-get install socat): {e}")
        });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "socat did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsProxy { child, port }
}

/// CA, server (`localhost`), client and a foreign client certificate in `dir`.
fn write_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ca = Authority::new("mongo test CA").unwrap();
    let other = Authority::new("other CA").unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("ca.crt", ca.pem());
    write("other-ca.crt", other.pem());
    let (cert, key) = ca.sign("localhost", Validity::Now).unwrap();
    write("server.crt", &cert);
    write("server.key", &key);
    let (cert, key) = ca.sign("datastore", Validity::Now).unwrap();
    write("client.crt", &cert);
    write("client.key", &key);
    let (cert, key) = other.sign("datastore", Validity::Now).unwrap();
    write("foreign.crt", &cert);
    write("foreign.key", &key);
}

fn settings(port: u16, dir: &Path, client: &str) -> MongoSettings {
    let mut s = MongoSettings::from_uri(
        &format!("mongodb://localhost:{port}/?directConnection=true"),
        &unique_database_name("tls"),
    );
    s.ca_file = Some(dir.join("ca.crt"));
    s.cert_file = Some(dir.join(format!("{client}.crt")));
    s.key_file = Some(dir.join(format!("{client}.key")));
    s.server_selection_timeout = Duration::from_secs(3);
    s
}

fn cert_dir() -> PathBuf {
    std::env::temp_dir().join(format!("mongo-tls-{}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_handshake_through_a_tls_proxy() {
    let server = TestMongo::shared().unwrap_or_else(|e| panic!("MongoDB: {e}"));
    let dir = cert_dir();
    write_certs(&dir);
    let proxy = start_proxy(&dir, &upstream(server.uri()));
    let attempt = |client: &str, ca: &str| {
        let mut s = settings(proxy.port, &dir, client);
        s.ca_file = Some(dir.join(ca));
        async move { MongoDataStore::connect_with(&s).await.map(|_| ()) }
    };

    // The right CA and a client certificate the proxy accepts: the handshake completes and
    // the provider authenticates with MONGODB-X509 over it. The test servers have no X.509
    // users, so the server's refusal of that login is what proves the TLS session worked.
    let err = attempt("client", "ca.crt")
        .await
        .expect_err("no X.509 users");
    eprintln!("right certificates: {err}");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("MONGODB-X509"), "{err}");

    // A client certificate from another CA: the proxy ends the handshake.
    let err = attempt("foreign", "ca.crt")
        .await
        .expect_err("foreign client cert");
    eprintln!("foreign client certificate: {err}");
    assert!(
        !err.to_string().contains("MONGODB-X509"),
        "got past TLS: {err}"
    );
    // A CA that did not sign the server certificate: the provider refuses the server.
    let err = attempt("client", "other-ca.crt")
        .await
        .expect_err("wrong CA");
    eprintln!("wrong CA: {err}");
    assert!(
        !err.to_string().contains("MONGODB-X509"),
        "got past TLS: {err}"
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir);
}
