use rand::distr::Alphanumeric;
use rand::Rng;
use std::fmt;

/// `ORD` + 13-digit millisecond timestamp + 4 random alphanumerics: 20 characters, inside WeChat's
/// `out_trade_no` limit (32 of `[0-9A-Za-z_-]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderNumber(String);

impl OrderNumber {
    /// The shape [`OrderNumber::parse`] accepts, as a JSON Schema pattern for the OpenAPI document.
    pub const PATTERN: &'static str = "^ORD[0-9]{13}[A-Za-z0-9]{4}$";

    pub fn generate(now_millis: i64) -> Self {
        let suffix: String = rand::rng().sample_iter(&Alphanumeric).take(4).map(char::from).collect();
        OrderNumber(format!("ORD{:013}{suffix}", now_millis.rem_euclid(10_000_000_000_000)))
    }

    /// Accepts only the shape this service generates, so a path segment can be used in queries safely.
    pub fn parse(s: &str) -> Option<Self> {
        // Bytes, not string slices: a multi-byte character must not split a slice (that would panic).
        let rest = s.strip_prefix("ORD")?.as_bytes();
        let valid = rest.len() == 17
            && rest[..13].iter().all(u8::is_ascii_digit)
            && rest[13..].iter().all(u8::is_ascii_alphanumeric);
        valid.then(|| OrderNumber(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_multibyte_character_is_refused_not_a_panic() {
        assert_eq!(OrderNumber::parse("ORD176390000000\u{e9}abc"), None);
        assert_eq!(OrderNumber::parse("ORD1763900000000\u{e9}ab"), None);
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_and_what_parses_is_safe(s in "\\PC{0,40}") {
            if let Some(n) = OrderNumber::parse(&s) {
                prop_assert_eq!(n.as_str().len(), 20);
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
            }
        }

        #[test]
        fn generated_numbers_parse(millis in any::<i64>()) {
            let n = OrderNumber::generate(millis);
            prop_assert_eq!(OrderNumber::parse(n.as_str()), Some(n.clone()));
        }
    }

    #[test]
    fn generated_numbers_have_the_documented_shape() {
        let n = OrderNumber::generate(1_647_840_687_637);
        assert_eq!(n.as_str().len(), 20);
        assert!(n.as_str().starts_with("ORD1647840687637"));
        assert_eq!(OrderNumber::parse(n.as_str()), Some(n));
    }

    #[test]
    fn parse_refuses_other_shapes() {
        for bad in [
            "",
            "ORD",
            "ORD1647840687637ab",
            "XYZ1647840687637abcd",
            "ORD16478406876x7abcd",
            "ORD1647840687637ab-d",
            "ORD1647840687637abcde",
        ] {
            assert_eq!(OrderNumber::parse(bad), None, "{bad}");
        }
    }
}
