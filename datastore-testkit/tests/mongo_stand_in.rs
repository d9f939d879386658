//! Starts the real stand-in servers through the public API (each skipped, with a
//! note, only when its binary is not installed; CI installs SecantusDB).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use datastore_testkit::mongo::{Lane, StandIn, StandInServer, TestMongo};
use datastore_testkit::HarnessError;

/// Whether `kind`'s binary is installed; prints a note when it is not.
fn stand_in_installed(kind: StandIn) -> bool {
    match kind.locate() {
        Ok(_) => true,
        Err(err @ HarnessError::StandInMissing { .. }) => {
            eprintln!("NOTE: skipping, the {kind} stand-in is not installed: {err}");
            false
        }
        Err(other) => panic!("unexpected {other:?}"),
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500))
}

/// A BSON document `{hello: 1, $db: "admin"}`.
fn hello_document() -> Vec<u8> {
    let mut body = Vec::new();
    body.push(0x10); // int32
    body.extend_from_slice(b"hello\0");
    body.extend_from_slice(&1i32.to_le_bytes());
    body.push(0x02); // string
    body.extend_from_slice(b"$db\0");
    body.extend_from_slice(&6i32.to_le_bytes());
    body.extend_from_slice(b"admin\0");
    body.push(0x00);
    let mut doc = ((body.len() + 4) as i32).to_le_bytes().to_vec();
    doc.extend_from_slice(&body);
    doc
}

/// Sends `hello` as an OP_MSG and returns the reply's body (everything after
/// the 16-byte header).
fn hello(stream: &mut TcpStream) -> Vec<u8> {
    const OP_MSG: i32 = 2013;
    let mut payload = 0u32.to_le_bytes().to_vec(); // flagBits
    payload.push(0); // section kind 0: body
    payload.extend_from_slice(&hello_document());
    let mut message = ((16 + payload.len()) as i32).to_le_bytes().to_vec();
    message.extend_from_slice(&1i32.to_le_bytes()); // requestID
    message.extend_from_slice(&0i32.to_le_bytes()); // responseTo
    message.extend_from_slice(&OP_MSG.to_le_bytes());
    message.extend_from_slice(&payload);
    stream.write_all(&message).unwrap();

    let mut header = [0u8; 16];
    stream.read_exact(&mut header).unwrap();
    let length = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    assert_eq!(
        i32::from_le_bytes(header[12..16].try_into().unwrap()),
        OP_MSG
    );
    let mut body = vec![0u8; length - 16];
    stream.read_exact(&mut body).unwrap();
    body
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn stand_ins_speak_mongodb_and_stop_on_drop() {
    for (kind, set_name) in [
        (StandIn::SecantusDb, "secantus"),
        (StandIn::Jongodb, "jongodb-rs0"),
    ] {
        if !stand_in_installed(kind) {
            continue;
        }
        let started = Instant::now();
        let server = StandInServer::start_kind(kind).expect("stand-in starts");
        eprintln!(
            "{kind} stand-in {} ready after {:?}",
            server.uri(),
            started.elapsed()
        );
        assert_eq!(server.kind(), kind);
        let port = server.port();
        assert!(
            server
                .uri()
                .starts_with(&format!("mongodb://127.0.0.1:{port}/")),
            "{}",
            server.uri()
        );
        assert!(
            server.uri().ends_with(&format!("?replicaSet={set_name}")),
            "{}",
            server.uri()
        );

        let mut stream = connect(port).expect("stand-in accepts TCP connections");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reply = hello(&mut stream);
        // `isWritablePrimary: true` (BSON boolean) and the replica set name.
        let mut writable = vec![0x08];
        writable.extend_from_slice(b"isWritablePrimary\0\x01");
        assert!(
            contains(&reply, &writable),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
        assert!(
            contains(&reply, set_name.as_bytes()),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
        drop(stream);

        let stopping = Instant::now();
        drop(server);
        eprintln!("drop took {:?}", stopping.elapsed());
        assert!(connect(port).is_err(), "port {port} still accepts");
    }
}

#[test]
fn shared_instance_is_reused() {
    let external = [TestMongo::URI_ENV, "MONGODB_URI"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !external && !stand_in_installed(StandIn::from_env().unwrap()) {
        return;
    }
    let first = TestMongo::shared().expect("shared server available");
    let second = TestMongo::shared().expect("shared server available");
    assert!(std::ptr::eq(first, second));
    eprintln!("shared server: {} ({first:?})", first.lane());
    assert!(first.uri().starts_with("mongodb"));
    assert_eq!(
        first.is_stand_in(),
        matches!(first.lane(), Lane::StandIn(_))
    );
    if external {
        assert_eq!(first.lane(), Lane::External);
    }
    if first.lane() != Lane::External {
        let port: u16 = first
            .uri()
            .trim_start_matches("mongodb://127.0.0.1:")
            .split(['/', '?'])
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(connect(port).is_ok());
    }
}
