//! Resume tokens: the server's `_data`, and the API's totally ordered [`ResumeToken`] made from
//! it.
//!
//! MongoDB's `_data` is the hex of a KeyString that starts with the cluster time, so it orders
//! as text in commit order and is the API token as is. Servers with their own format encode a
//! BSON document instead (SecantusDB: `{s: <oplog sequence, int32>, t: <timestamp>, n: <ns>,
//! k: <document key>}`), whose little-endian integers do not order as text. For those the API
//! token is an order key, then `-`, then `_data`: the key writes the leading integer and
//! timestamp fields big-endian, so tokens compare in the server's order.

use datastore_api::{Error, Result, ResumeToken};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::change_stream::event::ResumeToken as DriverToken;

/// Longest token accepted from a caller.
const MAX_TOKEN_LEN: usize = 16_384;

/// The API token for a server token's `_data`.
pub(crate) fn api_token(data: &str) -> ResumeToken {
    match order_key(data) {
        Some(key) => ResumeToken::from_string(format!("{key}-{data}")),
        None => ResumeToken::from_string(data),
    }
}

/// The server's `_data` in an API token; `InvalidInput` unless the token is one this provider
/// makes.
pub(crate) fn server_data(token: &ResumeToken) -> Result<String> {
    let t = token.as_str();
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let data = if t.len() > MAX_TOKEN_LEN {
        ""
    } else {
        match t.split_once('-') {
            Some((key, data))
                if hex(key) && hex(data) && order_key(data).as_deref() == Some(key) =>
            {
                data
            }
            None if hex(t) && order_key(t).is_none() => t,
            _ => "",
        }
    };
    if data.is_empty() {
        return Err(Error::invalid_input(format!(
            "malformed resume token {t:?}: not a MongoDB change-stream token"
        )));
    }
    Ok(data.to_owned())
}

/// Refuses a token (its `_data`) that no change stream of the collection `namespace`
/// (`db.collection`) issued: a BSON token (SecantusDB) names its namespace, which must be
/// this one; MongoDB's KeyString starts with its cluster time (type byte `82`) and ends with
/// the end marker `04`, so a cut or made-up token is refused here instead of failing at the
/// next read.
pub(crate) fn check_issued_for(data: &str, namespace: &str) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::invalid_input(format!(
            "resume token {data:?}: {why}"
        )))
    };
    if order_key(data).is_some() {
        let bytes: Vec<u8> = (0..data.len() / 2)
            .filter_map(|i| u8::from_str_radix(&data[2 * i..2 * i + 2], 16).ok())
            .collect();
        if let Ok(document) = Document::from_reader(bytes.as_slice()) {
            if let Ok(of) = document.get_str("n") {
                if of != namespace {
                    return refuse(format!(
                        "it belongs to the change stream of {of}, not of {namespace}"
                    ));
                }
            }
        }
        return Ok(());
    }
    let upper = data.to_ascii_uppercase();
    if upper.len() < 20 || !upper.starts_with("82") || !upper.ends_with("04") {
        return refuse(
            "not a MongoDB change-stream token (cut short, or never issued by a stream)".into(),
        );
    }
    Ok(())
}

/// The order key of a BSON-encoded `_data`: its leading integer and timestamp fields,
/// big-endian (integers with the sign bit flipped); `None` for KeyString tokens (and anything
/// that is not a BSON document).
fn order_key(data: &str) -> Option<String> {
    let digits = data.as_bytes();
    if !digits.len().is_multiple_of(2) || digits.len() < 10 {
        return None;
    }
    let nibble = |d: u8| {
        char::from(d)
            .to_digit(16)
            .and_then(|n| u8::try_from(n).ok())
    };
    let bytes: Vec<u8> = digits
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<_>>()?;
    let declared = u32::from_le_bytes(bytes[..4].try_into().ok()?) as usize;
    if declared != bytes.len() {
        return None;
    }
    let document = Document::from_reader(bytes.as_slice()).ok()?;
    let mut key = String::new();
    for (_, value) in &document {
        match value {
            Bson::Int32(n) => key.push_str(&format!("{:016x}", (i64::from(*n) as u64) ^ (1 << 63))),
            Bson::Int64(n) => key.push_str(&format!("{:016x}", (*n as u64) ^ (1 << 63))),
            Bson::Timestamp(ts) => key.push_str(&format!("{:08x}{:08x}", ts.time, ts.increment)),
            _ => break,
        }
    }
    (!key.is_empty()).then_some(key)
}

/// The driver's token for a `_data` string.
pub(crate) fn driver_token(data: &str) -> Result<DriverToken> {
    bson::from_bson(Bson::Document(doc! { "_data": data })).map_err(|e| {
        Error::permanent(format!("resume token {data:?} does not decode")).with_source(e)
    })
}

/// The `_data` string of a driver token.
pub(crate) fn token_data(token: &DriverToken) -> Option<String> {
    match bson::to_bson(token) {
        Ok(Bson::Document(d)) => d.get_str("_data").ok().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::event::fixtures::{TOKEN_INSERT, TOKEN_UPDATE};
    use datastore_api::ErrorKind;
    use mongodb::bson::{oid::ObjectId, Timestamp};

    /// A token in SecantusDB's format.
    fn secantus(seq: i32, time: u32, increment: u32) -> String {
        let token = doc! {
            "s": seq,
            "t": Timestamp { time, increment },
            "n": "db.HealthEvents",
            "k": { "_id": ObjectId::parse_str("6b0f61c0a8d5557b4af9e6cd").unwrap() },
        };
        let mut bytes = Vec::new();
        token.to_writer(&mut bytes).unwrap();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn bson_tokens_order_by_their_leading_fields() {
        // Observed: sequence 0x1bff then 0x1c00, whose little-endian hex does not order.
        let (a, b) = (secantus(0x1bff, 7, 1), secantus(0x1c00, 7, 1));
        assert!(a > b);
        let (ta, tb) = (api_token(&a), api_token(&b));
        assert!(ta < tb, "{ta:?} {tb:?}");
        assert_eq!(server_data(&ta).unwrap(), a);
        assert!(api_token(&secantus(-1, 9, 9)) < api_token(&secantus(0, 0, 0)));
    }

    #[test]
    fn tokens_of_another_collection_or_never_issued_are_refused() {
        let ours = secantus(3, 7, 1);
        assert!(check_issued_for(&ours, "db.HealthEvents").is_ok());
        let e = check_issued_for(&ours, "db.MaintenanceEvents").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.message()
                .contains("belongs to the change stream of db.HealthEvents"),
            "{e}"
        );
        let keystring = "82635019A0000000012B042C0100296E5A1004AB1154ACACD849A48C61756D70D3B21F04";
        assert!(check_issued_for(keystring, "db.HealthEvents").is_ok());
        for bad in [&keystring[..20], &"1".repeat(10_000)] {
            let e = check_issued_for(bad, "db.HealthEvents").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn keystring_tokens_are_kept_as_they_are() {
        let keystring = "82635019A0000000012B042C0100296E5A1004AB1154ACACD849A48C61756D70D3B21F04";
        assert_eq!(api_token(keystring).as_str(), keystring);
        assert_eq!(
            server_data(&ResumeToken::from_string(keystring)).unwrap(),
            keystring
        );
    }

    #[test]
    fn foreign_tokens_are_refused() {
        let data = secantus(5, 1, 1);
        let forged_key = format!("{}-{data}", "0".repeat(16));
        for bad in [
            "",
            "82zz",
            "1.2",
            "0000000000000000001.0000000000000000002",
            &forged_key,
            &data, // a BSON token without its key
            &format!("ab-{}", "82ab"),
            "ab-aéaaaaaaa",
            "+a+a+a+a+a+a",
            &"a".repeat(MAX_TOKEN_LEN + 2),
        ] {
            let err = server_data(&ResumeToken::from_string(bad)).unwrap_err();
            assert_eq!(err.kind(), datastore_api::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn driver_tokens_round_trip() {
        let data = secantus(5, 1, 1);
        assert_eq!(
            token_data(&driver_token(&data).unwrap()).as_deref(),
            Some(data.as_str())
        );
    }

    #[test]
    fn tokens_order_like_their_positions() {
        // Same event identity, cluster times (t, i): (0x635019A0, 1) < (0x635019A0, 2) <
        // (0x635019A1, 1).
        let at = |time: &str, inc: &str| {
            ResumeToken::from_string(format!(
                "82{time}{inc}2B042C0100296E5A1004AB1154ACACD849A48C61756D70D3B21F04"
            ))
        };
        let a = at("635019A0", "00000001");
        let b = at("635019A0", "00000002");
        let c = at("635019A1", "00000001");
        assert!(a < b && b < c);
        assert!(ResumeToken::from_string(TOKEN_UPDATE) < ResumeToken::from_string(TOKEN_INSERT));
        // Checkpoints accept MongoDB tokens only.
        assert!(server_data(&a).is_ok());
        for bad in ["", "0000000000000000001.0000000000000000002", "82zz"] {
            let err = server_data(&ResumeToken::from_string(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    }
}
