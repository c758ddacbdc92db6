//! Identifiers that validate on parse.
//!
//! Product, member and order ids are positive integers that fit in a signed
//! 64-bit database column. Parsing is strict (ASCII digits only, no sign, no
//! whitespace) so `/api/products/+1`, `/api/products/1.0` and
//! `/api/products/99999999999999999999` are all rejected the same way on the
//! edge and on the origin.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string or number is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an id is a positive whole number below 2^63")]
pub struct InvalidId;

/// Parses the strict decimal form shared by every id type.
fn parse_positive(text: &str) -> Result<i64, InvalidId> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidId);
    }
    match text.parse::<i64>() {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(InvalidId),
    }
}

/// The OpenAPI schema every id shares: what `parse_positive` accepts.
#[cfg(feature = "openapi")]
fn id_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(i64::MAX))
        .into()
}

macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(i64);

        impl $name {
            /// Wraps a value, refusing zero and negatives.
            pub fn new(value: i64) -> Result<Self, InvalidId> {
                if value > 0 { Ok(Self(value)) } else { Err(InvalidId) }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(text: &str) -> Result<Self, InvalidId> {
                parse_positive(text).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_i64(self.0)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = i64::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

positive_id!(
    /// A flash-sale item (the API calls it a product).
    ProductId
);
positive_id!(
    /// A shop member, as named in their token.
    MemberId
);
positive_id!(
    /// An order row in the database.
    OrderId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_positive_decimals() {
        assert_eq!("42".parse::<ProductId>().unwrap().get(), 42);
        assert_eq!(
            "9223372036854775807".parse::<MemberId>().unwrap().get(),
            i64::MAX
        );
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "abc",
            "9223372036854775808",
            "99999999999999999999",
            "٣",
        ] {
            assert!(bad.parse::<ProductId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn json_ids_must_be_positive() {
        assert!(serde_json::from_str::<MemberId>("7").is_ok());
        assert!(serde_json::from_str::<MemberId>("0").is_err());
        assert!(serde_json::from_str::<MemberId>("-3").is_err());
        assert!(serde_json::from_str::<MemberId>("\"7\"").is_err());
    }
}
