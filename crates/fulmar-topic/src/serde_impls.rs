//! `serde` support: every topic type is a string, validated when deserialised.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{SharedFilter, SubscriptionFilter, TopicFilter, TopicName};

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(D::Error::custom)
            }
        }
    };
}

string_serde!(TopicName);
string_serde!(TopicFilter);
string_serde!(SharedFilter);
string_serde!(SubscriptionFilter);

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde::de::value::{Error, StrDeserializer};

    use crate::{SubscriptionFilter, TopicError, TopicName};

    // MQTT-3.3.2-2
    #[test]
    fn deserialising_validates() {
        let ok = TopicName::deserialize(StrDeserializer::<Error>::new("a/b")).unwrap();
        assert_eq!(ok, "a/b");
        let err = TopicName::deserialize(StrDeserializer::<Error>::new("a/+")).unwrap_err();
        assert_eq!(err.to_string(), TopicError::WildcardInName.to_string());
        let shared =
            SubscriptionFilter::deserialize(StrDeserializer::<Error>::new("$share/g/#")).unwrap();
        assert_eq!(shared.group(), Some("g"));
    }
}
