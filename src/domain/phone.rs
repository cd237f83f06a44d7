use std::fmt;

/// A phone number as the carrier wants it: an optional `+`, then 6 to 15 digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// The shape [`PhoneNumber::parse`] accepts, as a JSON Schema pattern for the OpenAPI document.
    pub const PATTERN: &'static str = "^\\+?[0-9]{6,15}$";

    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix('+').unwrap_or(s);
        let valid = (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        valid.then(|| PhoneNumber(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_and_what_parses_is_digits(s in "\\PC{0,24}") {
            if let Some(p) = PhoneNumber::parse(&s) {
                let digits = p.as_str().strip_prefix('+').unwrap_or(p.as_str());
                prop_assert!((6..=15).contains(&digits.len()));
                prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
            }
        }

        #[test]
        fn every_well_formed_number_parses(plus in any::<bool>(), digits in "[0-9]{6,15}") {
            let s = if plus { format!("+{digits}") } else { digits };
            prop_assert_eq!(PhoneNumber::parse(&s).map(|p| p.to_string()), Some(s));
        }
    }

    #[test]
    fn accepts_six_to_fifteen_digits_with_optional_plus() {
        for ok in ["123456", "+97688112233", "123456789012345", "+123456789012345"] {
            assert!(PhoneNumber::parse(ok).is_some(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in
            ["", "12345", "1234567890123456", "++123456", "12 345 678", "+", "1234567a", "１２３４５６", "123456+"]
        {
            assert!(PhoneNumber::parse(bad).is_none(), "{bad}");
        }
    }
}
