//! `serde_json::to_value` behind a guard: values that nest too deep or hold NaN or an infinite
//! number are refused instead of overflowing the stack or turning into `null`.
//!
//! [`Guarded`] wraps the value being serialized and [`Guard`] wraps the serializer it is given,
//! so every nested value (element, field, map key or value, `Some`, newtype) is serialized
//! through them again, one level deeper. Past the limit the guard returns an error before the
//! value's own `serialize` runs, so the recursion never goes deeper than the limit, whatever the
//! value is. Everything else is forwarded to `serde_json`'s serializer unchanged, so an accepted
//! value converts exactly as `serde_json::to_value` converts it.

use std::cell::Cell;

use serde::ser::{self, Serialize, Serializer};

use crate::value::{Value, MAX_DEPTH};

/// The output nesting the guard lets through. One more than [`MAX_DEPTH`], because
/// [`canonicalize`](crate::value::canonicalize) (which applies the exact rule afterwards)
/// accepts a date wrapper at [`MAX_DEPTH`], whose string is one level deeper.
const NESTING_LIMIT: usize = MAX_DEPTH + 1;

/// Transparent layers (`Some`, newtype structs) allowed on one path: they add no nesting to the
/// output, but each is one more level of recursion.
const WRAPPER_LIMIT: usize = MAX_DEPTH;

/// Why a value was not converted.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// It nests deeper than [`MAX_DEPTH`].
    TooDeep,
    /// It holds this NaN or infinite number.
    NonFinite(f64),
    /// Its `Serialize` implementation failed.
    Unserializable(serde_json::Error),
}

impl Refusal {
    /// The message for a value meant for the field `path`.
    pub(crate) fn describe(&self, path: &str) -> String {
        match self {
            Refusal::TooDeep => format!(
                "the value for '{path}' nests deeper than {MAX_DEPTH} levels, the limit for stored values"
            ),
            Refusal::NonFinite(f) => format!(
                "NaN and infinite numbers cannot be stored; the value for '{path}' is or contains {f}"
            ),
            Refusal::Unserializable(e) => {
                format!("the value for '{path}' does not serialize: {e}")
            }
        }
    }
}

/// What the guard found; kept aside because the serializer's own error type cannot carry it.
#[derive(Debug, Clone, Copy)]
enum Found {
    TooDeep,
    NonFinite(f64),
}

/// Converts `value` like `serde_json::to_value`, refusing values that nest deeper than
/// [`MAX_DEPTH`] (allowing one more level, see [`NESTING_LIMIT`]) and NaN or infinite numbers.
pub(crate) fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, Refusal> {
    let found = Cell::new(None);
    let guarded = Guarded {
        value,
        at: Level::default(),
        found: &found,
    };
    let converted = serde_json::to_value(guarded);
    // Checked even on success, in case a `Serialize` implementation swallowed the guard's error.
    match (found.take(), converted) {
        (Some(Found::TooDeep), _) => Err(Refusal::TooDeep),
        (Some(Found::NonFinite(f)), _) => Err(Refusal::NonFinite(f)),
        (None, Ok(v)) => Ok(v),
        (None, Err(e)) => Err(Refusal::Unserializable(e)),
    }
}

/// Where a value sits: its nesting in the output and the transparent layers above it.
#[derive(Debug, Clone, Copy, Default)]
struct Level {
    depth: usize,
    wrappers: usize,
}

impl Level {
    fn deeper(self, levels: usize) -> Level {
        Level {
            depth: self.depth + levels,
            ..self
        }
    }

    fn wrapped(self) -> Level {
        Level {
            wrappers: self.wrappers + 1,
            ..self
        }
    }
}

/// Records what was found (the first finding wins) and returns an error for the serializer.
fn refuse<E: ser::Error>(found: &Cell<Option<Found>>, what: Found) -> E {
    if found.get().is_none() {
        found.set(Some(what));
    }
    match what {
        Found::TooDeep => E::custom(format!("value nests deeper than {MAX_DEPTH} levels")),
        Found::NonFinite(f) => E::custom(format!("{f} is not a finite number")),
    }
}

/// A value to serialize at `at`, through a [`Guard`].
struct Guarded<'a, T: ?Sized> {
    value: &'a T,
    at: Level,
    found: &'a Cell<Option<Found>>,
}

impl<T: Serialize + ?Sized> Serialize for Guarded<'_, T> {
    fn serialize<S: Serializer>(&self, inner: S) -> Result<S::Ok, S::Error> {
        if self.at.depth > NESTING_LIMIT || self.at.wrappers > WRAPPER_LIMIT {
            return Err(refuse(self.found, Found::TooDeep));
        }
        self.value.serialize(Guard {
            inner,
            at: self.at,
            found: self.found,
        })
    }
}

/// A serializer forwarding to `inner`, wrapping every nested value in a [`Guarded`].
struct Guard<'a, S> {
    inner: S,
    at: Level,
    found: &'a Cell<Option<Found>>,
}

impl<'a, S> Guard<'a, S> {
    fn nested<'v, T: ?Sized>(&self, value: &'v T, at: Level) -> Guarded<'v, T>
    where
        'a: 'v,
    {
        Guarded {
            value,
            at,
            found: self.found,
        }
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
            self.inner.$method(v)
        })*
    };
}

impl<'a, S: Serializer> Serializer for Guard<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if !v.is_finite() {
            return Err(refuse(self.found, Found::NonFinite(f64::from(v))));
        }
        self.inner.serialize_f32(v)
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if !v.is_finite() {
            return Err(refuse(self.found, Found::NonFinite(v)));
        }
        self.inner.serialize_f64(v)
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let value = self.nested(value, self.at.wrapped());
        self.inner.serialize_some(&value)
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let value = self.nested(value, self.at.wrapped());
        self.inner.serialize_newtype_struct(name, &value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        // `{"variant": value}`: one level of nesting.
        let value = self.nested(value, self.at.deeper(1));
        self.inner
            .serialize_newtype_variant(name, index, variant, &value)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let (at, found) = (self.at.deeper(1), self.found);
        let inner = self.inner.serialize_seq(len)?;
        Ok(Compound { inner, at, found })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let (at, found) = (self.at.deeper(1), self.found);
        let inner = self.inner.serialize_tuple(len)?;
        Ok(Compound { inner, at, found })
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let (at, found) = (self.at.deeper(1), self.found);
        let inner = self.inner.serialize_tuple_struct(name, len)?;
        Ok(Compound { inner, at, found })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        let (at, found) = (self.at.deeper(2), self.found);
        let inner = self
            .inner
            .serialize_tuple_variant(name, index, variant, len)?;
        // `{"variant": [fields]}`: two levels of nesting.
        Ok(Compound { inner, at, found })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let (at, found) = (self.at.deeper(1), self.found);
        let inner = self.inner.serialize_map(len)?;
        Ok(Compound { inner, at, found })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let (at, found) = (self.at.deeper(1), self.found);
        let inner = self.inner.serialize_struct(name, len)?;
        Ok(Compound { inner, at, found })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let (at, found) = (self.at.deeper(2), self.found);
        let inner = self
            .inner
            .serialize_struct_variant(name, index, variant, len)?;
        // `{"variant": {fields}}`: two levels of nesting.
        Ok(Compound { inner, at, found })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A compound serializer forwarding to `inner`; its children sit at `at`.
struct Compound<'a, C> {
    inner: C,
    at: Level,
    found: &'a Cell<Option<Found>>,
}

impl<'a, C> Compound<'a, C> {
    fn child<'v, T: ?Sized>(&self, value: &'v T) -> Guarded<'v, T>
    where
        'a: 'v,
    {
        Guarded {
            value,
            at: self.at,
            found: self.found,
        }
    }
}

/// Implements a compound trait whose children are passed to `$method(value)`.
macro_rules! compound {
    ($trait:ident, $method:ident) => {
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                let value = self.child(value);
                self.inner.$method(&value)
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

/// Implements a compound trait with named fields.
macro_rules! named_fields {
    ($trait:ident) => {
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), C::Error> {
                let value = self.child(value);
                self.inner.serialize_field(key, &value)
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.inner.skip_field(key)
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    };
}

named_fields!(SerializeStruct);
named_fields!(SerializeStructVariant);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        let key = self.child(key);
        self.inner.serialize_key(&key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let value = self.child(value);
        self.inner.serialize_value(&value)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    enum Shape {
        Unit,
        New(u8),
        Tuple(u8, Option<String>),
        Struct { a: Vec<i32>, b: (bool, char) },
    }

    #[derive(Serialize)]
    struct Everything {
        shapes: Vec<Shape>,
        map: BTreeMap<u32, f32>,
        some: Option<Option<i128>>,
        none: Option<u8>,
        unit: (),
        bytes: serde_bytes_like::Bytes,
        #[serde(flatten)]
        extra: BTreeMap<String, u64>,
    }

    mod serde_bytes_like {
        /// Serializes through `serialize_bytes`.
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }

    #[test]
    fn accepted_values_convert_exactly_as_serde_json_converts_them() {
        let v = Everything {
            shapes: vec![
                Shape::Unit,
                Shape::New(7),
                Shape::Tuple(1, Some("x".into())),
                Shape::Struct {
                    a: vec![-1, 2],
                    b: (true, 'c'),
                },
            ],
            map: BTreeMap::from([(1, 0.5), (2, -1e30)]),
            some: Some(Some(-5)),
            none: None,
            unit: (),
            bytes: serde_bytes_like::Bytes(vec![1, 2]),
            extra: BTreeMap::from([("flat".to_owned(), u64::MAX)]),
        };
        assert_eq!(to_value(&v).unwrap(), serde_json::to_value(&v).unwrap());
        let j = json!({"a": [1, {"b": null, "c": 2.5}], "d": "e"});
        assert_eq!(to_value(&j).unwrap(), j);
    }

    #[test]
    fn nesting_is_limited_exactly_at_the_limit() {
        let mut v = json!(1);
        for _ in 0..NESTING_LIMIT {
            v = json!([v]);
        }
        assert!(to_value(&v).is_ok());
        let v = json!([v]);
        assert!(matches!(to_value(&v), Err(Refusal::TooDeep)));
    }

    /// Serializes as nothing but transparent layers: `Some(newtype(Some(newtype(…))))`.
    #[derive(Serialize)]
    struct Chain(Option<Box<Chain>>);

    #[test]
    fn transparent_layers_are_limited_too() {
        let chain = |n: usize| (0..n).fold(Chain(None), |c, _| Chain(Some(Box::new(c))));
        // `chain(n)` is n + 1 newtypes and n `Some`s: 2n + 1 wrappers, no nesting.
        assert_eq!(
            to_value(&chain(WRAPPER_LIMIT / 2 - 1)).unwrap(),
            Value::Null
        );
        assert!(matches!(
            to_value(&chain(WRAPPER_LIMIT / 2)),
            Err(Refusal::TooDeep)
        ));
        assert!(matches!(to_value(&chain(2_000)), Err(Refusal::TooDeep)));
    }

    #[test]
    fn non_finite_numbers_are_refused_anywhere() {
        assert!(matches!(to_value(&f64::NAN), Err(Refusal::NonFinite(f)) if f.is_nan()));
        assert!(matches!(
            to_value(&vec![1.0, f64::INFINITY]),
            Err(Refusal::NonFinite(f)) if f == f64::INFINITY
        ));
        assert!(matches!(
            to_value(&BTreeMap::from([("k", f32::NEG_INFINITY)])),
            Err(Refusal::NonFinite(f)) if f == f64::NEG_INFINITY
        ));
        assert!(matches!(
            to_value(&Some(f64::NAN)),
            Err(Refusal::NonFinite(_))
        ));
    }
}
