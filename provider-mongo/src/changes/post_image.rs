//! The document right after an update, computed from the event itself: its pre-image with its
//! `updateDescription` applied.
//!
//! MongoDB (6.0+) stores the pre-image of every update when the collection has
//! `changeStreamPreAndPostImages`, and derives the post-image the same way. Doing it here
//! makes the delivered document depend only on what the server recorded at write time: a
//! server that looks the post-image up when the event is read (SecantusDB does) would give
//! the document of a later change, or none once the document is deleted.
//!
//! `updateDescription` follows the server's diff: `truncatedArrays` shrink arrays,
//! `removedFields` remove fields, `updatedFields` set values by dotted path. A path's
//! intermediate fields exist in the pre-image (a new subtree is reported whole, at its topmost
//! new field). Segments are read as nested fields first, as the server's update operators read
//! them; only where no nested field exists is a field name containing a dot tried; a path that
//! matches nothing names a new field of the container it reached.

use mongodb::bson::{Bson, Document};

use datastore_api::{Error, Result};

/// The post-image: `pre` with `description` (a MongoDB `updateDescription`) applied.
pub(crate) fn apply(mut pre: Document, description: &Document) -> Result<Document> {
    if let Ok(truncated) = description.get_array("truncatedArrays") {
        for t in truncated {
            let t = t.as_document().ok_or_else(|| shape("truncatedArrays"))?;
            let field = t.get_str("field").map_err(|_| shape("truncatedArrays"))?;
            let size = match t.get("newSize") {
                Some(Bson::Int32(n)) => usize::try_from(*n).ok(),
                Some(Bson::Int64(n)) => usize::try_from(*n).ok(),
                _ => None,
            }
            .ok_or_else(|| shape("truncatedArrays"))?;
            edit(&mut pre, field, Edit::Truncate(size))?;
        }
    }
    if let Ok(removed) = description.get_array("removedFields") {
        for path in removed {
            let path = path.as_str().ok_or_else(|| shape("removedFields"))?;
            edit(&mut pre, path, Edit::Remove)?;
        }
    }
    match description.get("updatedFields") {
        Some(Bson::Document(updated)) => {
            for (path, value) in updated {
                edit(&mut pre, path, Edit::Set(value.clone()))?;
            }
        }
        None | Some(Bson::Null) => {}
        Some(_) => return Err(shape("updatedFields")),
    }
    Ok(pre)
}

/// One change at a path.
enum Edit {
    Set(Bson),
    Remove,
    Truncate(usize),
}

fn shape(part: &str) -> Error {
    Error::permanent(format!(
        "malformed MongoDB change event: updateDescription.{part} has an unknown shape"
    ))
}

fn mismatch(path: &str, why: &str) -> Error {
    Error::permanent(format!(
        "MongoDB change event: the update of {path:?} does not fit the event's pre-image ({why})"
    ))
}

fn edit(doc: &mut Document, path: &str, edit: Edit) -> Result<()> {
    let segments: Vec<&str> = path.split('.').collect();
    if edit_document(doc, &segments, &edit, path, true)? {
        Ok(())
    } else {
        match edit {
            // Removing a field the pre-image lacks leaves the same document.
            Edit::Remove => Ok(()),
            _ => Err(mismatch(path, "no such field")),
        }
    }
}

/// Applies `edit` at `segments` inside `doc`; false when nothing there matched. Only a set
/// creates a field: one segment in the container reached, or (at the top, `top`) the rest of a
/// path that matched nothing as a dotted name.
fn edit_document(
    doc: &mut Document,
    segments: &[&str],
    edit: &Edit,
    path: &str,
    top: bool,
) -> Result<bool> {
    for take in 1..=segments.len() {
        let key = segments[..take].join(".");
        if take == segments.len() {
            if doc.contains_key(&key) {
                return finish_in_document(doc, key, edit, path).map(|()| true);
            }
            continue;
        }
        let descended = match doc.get_mut(&key) {
            Some(Bson::Document(child)) => {
                edit_document(child, &segments[take..], edit, path, false)?
            }
            Some(Bson::Array(items)) => edit_array(items, &segments[take..], edit, path)?,
            _ => false,
        };
        if descended {
            return Ok(true);
        }
    }
    match edit {
        Edit::Set(value) if top || segments.len() == 1 => {
            doc.insert(segments.join("."), value.clone());
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn finish_in_document(doc: &mut Document, key: String, edit: &Edit, path: &str) -> Result<()> {
    match edit {
        Edit::Set(value) => {
            doc.insert(key, value.clone());
        }
        Edit::Remove => {
            doc.remove(&key);
        }
        Edit::Truncate(size) => match doc.get_mut(&key) {
            Some(Bson::Array(items)) => items.truncate(*size),
            _ => return Err(mismatch(path, "truncating a field that is not an array")),
        },
    }
    Ok(())
}

fn edit_array(items: &mut Vec<Bson>, segments: &[&str], edit: &Edit, path: &str) -> Result<bool> {
    let index: usize = segments[0]
        .parse()
        .map_err(|_| mismatch(path, "a field name inside an array"))?;
    if segments.len() > 1 {
        return match items.get_mut(index) {
            Some(Bson::Document(child)) => edit_document(child, &segments[1..], edit, path, false),
            Some(Bson::Array(inner)) => edit_array(inner, &segments[1..], edit, path),
            _ => Err(mismatch(
                path,
                "a path through a missing or scalar array element",
            )),
        };
    }
    match edit {
        Edit::Set(value) => {
            // Setting past the end pads with nulls, as the server does.
            if index >= items.len() {
                items.resize(index + 1, Bson::Null);
            }
            items[index] = value.clone();
        }
        // An unset array element stays as null.
        Edit::Remove => {
            if let Some(item) = items.get_mut(index) {
                *item = Bson::Null;
            }
        }
        Edit::Truncate(size) => match items.get_mut(index) {
            Some(Bson::Array(inner)) => inner.truncate(*size),
            _ => return Err(mismatch(path, "truncating an element that is not an array")),
        },
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    /// The pre-image and `updateDescription` SecantusDB reported for each update of one
    /// document (pymongo, `fullDocumentBeforeChange: "required"`), with the document read
    /// back after it.
    #[test]
    fn replays_a_recorded_history() {
        let mut doc = doc! { "_id": 1, "a": {}, "arr": [1, 2, 3], "x.y": 5, "o": { "0": 1 } };
        let steps = [
            // $set a.b.c on {a: {}}: the new subtree is reported at its topmost new field.
            (
                doc! { "updatedFields": { "a.b": { "c": 1 } } },
                "a",
                Bson::from(doc! { "b": { "c": 1 } }),
            ),
            // $push
            (
                doc! { "updatedFields": { "arr.3": 4 } },
                "arr",
                Bson::from(vec![Bson::from(1), 2.into(), 3.into(), 4.into()]),
            ),
            // $unset of an element leaves null
            (
                doc! { "updatedFields": { "arr.1": Bson::Null } },
                "arr",
                Bson::from(vec![Bson::from(1), Bson::Null, 3.into(), 4.into()]),
            ),
            // $inc of a missing field
            (doc! { "updatedFields": { "n": 1 } }, "n", Bson::from(1)),
            // $set x.y: a new nested x, while the dotted name "x.y" stays
            (
                doc! { "updatedFields": { "x": { "y": 6 } } },
                "x",
                Bson::from(doc! { "y": 6 }),
            ),
            // "0" is a field name inside an object
            (
                doc! { "updatedFields": { "o.0": 2 } },
                "o",
                Bson::from(doc! { "0": 2 }),
            ),
            // setting past the end pads with nulls
            (
                doc! { "updatedFields": { "arr": [] } },
                "arr",
                Bson::from(Vec::<Bson>::new()),
            ),
            (
                doc! { "updatedFields": { "arr.3": 7 } },
                "arr",
                Bson::from(vec![Bson::Null, Bson::Null, Bson::Null, 7.into()]),
            ),
            (
                doc! { "updatedFields": {}, "removedFields": ["a"] },
                "a",
                Bson::Null,
            ),
        ];
        for (description, field, value) in steps {
            doc = apply(doc, &description).unwrap();
            assert_eq!(
                doc.get(field).cloned().unwrap_or(Bson::Null),
                value,
                "{description}"
            );
        }
        assert_eq!(
            doc,
            doc! {
                "_id": 1, "arr": [Bson::Null, Bson::Null, Bson::Null, 7], "x.y": 5,
                "o": { "0": 2 }, "n": 1, "x": { "y": 6 },
            }
        );
    }

    #[test]
    fn dotted_names_and_truncation() {
        // Nested fields first (as `$set: {"a.b.c": 9}` reads its path); a dotted name only
        // where no nested field exists.
        let pre = doc! {
            "a.b": { "c": 1 }, "a": { "b": { "c": 2 } }, "x.y": { "z": 1 },
            "list": [1, 2, 3, { "q": [4, 5] }],
        };
        let post = apply(
            pre,
            &doc! {
                "updatedFields": { "a.b.c": 9, "x.y.z": 8, "list.3.q.0": 6, "list.1": 7 },
                "truncatedArrays": [{ "field": "list.3.q", "newSize": 1 }],
            },
        )
        .unwrap();
        assert_eq!(
            post,
            doc! {
                "a.b": { "c": 1 }, "a": { "b": { "c": 9 } }, "x.y": { "z": 8 },
                "list": [1, 7, 3, { "q": [6] }],
            }
        );
        let pre = doc! { "list": [1, 2, 3] };
        let post = apply(
            pre,
            &doc! { "updatedFields": {}, "truncatedArrays": [{ "field": "list", "newSize": 1_i64 }] },
        )
        .unwrap();
        assert_eq!(post, doc! { "list": [1] });
    }

    #[test]
    fn updates_that_do_not_fit_the_pre_image_are_errors() {
        for (pre, description) in [
            (
                doc! { "s": 1 },
                doc! { "truncatedArrays": [{ "field": "s", "newSize": 0 }] },
            ),
            (
                doc! { "list": [1] },
                doc! { "updatedFields": { "list.x": 1 } },
            ),
            (
                doc! { "list": [1] },
                doc! { "updatedFields": { "list.4.y": 1 } },
            ),
            (doc! {}, doc! { "updatedFields": [1] }),
            (doc! {}, doc! { "removedFields": [1] }),
        ] {
            let err = apply(pre.clone(), &description).unwrap_err();
            assert!(err.is_permanent_backend(), "{pre} {description}");
        }
        // Removing what is not there changes nothing.
        assert_eq!(
            apply(doc! { "a": 1 }, &doc! { "removedFields": ["b", "a.c"] }).unwrap(),
            doc! { "a": 1 }
        );
    }
}
