//! Compiles validated updates ([`ValidUpdate`]) to MongoDB update operators.
//!
//! `Set`, `Unset`, `Inc` and `Push` map to `$set`, `$unset`, `$inc` and `$push`, whose
//! semantics the API's update rules were written after (parents created, a non-object parent
//! is an error, int + int stays an int, …). `CurrentDate` becomes a `$set` of the
//! provider's server-clock reading (see [`ServerClock`](crate::clock::ServerClock)), so that
//! `createdAt`, `server_time()` and `CurrentDate` all read the same clock and the
//! `ProtoTimestamp` format (`{seconds, nanos}`), which `$currentDate` cannot write, works too.

use chrono::{DateTime, Utc};
use datastore_api::update::time_value;
use datastore_api::{Result, ValidOp, ValidUpdate, Value};
use mongodb::bson::{self, Bson};

use crate::convert::to_bson;

/// The update document for `update` applied at server time `now`.
pub(crate) fn compile_update(update: &ValidUpdate, now: DateTime<Utc>) -> Result<bson::Document> {
    let mut groups: [(&str, bson::Document); 4] = [
        ("$set", bson::Document::new()),
        ("$unset", bson::Document::new()),
        ("$inc", bson::Document::new()),
        ("$push", bson::Document::new()),
    ];
    for (path, op) in update.ops() {
        let (group, value) = match op {
            ValidOp::Set(v) => (0, to_bson(v)?),
            ValidOp::CurrentDate(format) => (0, to_bson(&time_value(now, *format)?)?),
            ValidOp::Unset => (1, Bson::String(String::new())),
            ValidOp::Inc(n) => (2, to_bson(&Value::Number(n.clone()))?),
            ValidOp::Push(v) => (3, to_bson(v)?),
        };
        groups[group].1.insert(path.as_str(), value);
    }
    let mut out = bson::Document::new();
    for (name, ops) in groups {
        if !ops.is_empty() {
            out.insert(name, ops);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use datastore_api::{TimeFormat, Update};
    use mongodb::bson::doc;

    #[test]
    fn groups_operations_by_operator() {
        let now = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        let u = Update::new()
            .set("a.b", 1)
            .unset("c")
            .inc("n", 2.5)
            .push("list", "x")
            .current_date("t", TimeFormat::ProtoTimestamp)
            .validate()
            .unwrap();
        let d = compile_update(&u, now).unwrap();
        assert_eq!(
            d,
            doc! {
                "$set": { "a.b": 1_i64, "t": { "seconds": now.timestamp(), "nanos": 0_i64 } },
                "$unset": { "c": "" },
                "$inc": { "n": 2.5 },
                "$push": { "list": "x" },
            }
        );
    }
}
