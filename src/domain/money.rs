use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::fmt;

/// An amount in yuan with at most two decimals (fen precision), never negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(Decimal);

/// Why a decimal is not a valid amount.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative")]
    Negative,
    #[error("amount has more than two decimals")]
    SubFen,
    #[error("amount is too large")]
    TooLarge,
    #[error("amount must be a decimal string of yuan with at most two decimals, like 12.50")]
    Malformed,
}

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// The shape [`Money::parse`] accepts, as a JSON Schema pattern for the OpenAPI document.
    pub const PATTERN: &'static str = "^[0-9]{1,10}(\\.[0-9]{1,2})?$";

    /// Parses an amount as the API writes it: 1 to 10 digits of yuan, then optionally a point and one or
    /// two more digits (`12`, `12.5`, `12.50`). No sign, exponent, spaces or separators; ten digits are
    /// the most `DECIMAL(12, 2)` holds.
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let digits =
            |part: &str, max: usize| (1..=max).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
        let (whole, fraction) = s.split_once('.').map_or((s, None), |(whole, fraction)| (whole, Some(fraction)));
        if !digits(whole, 10) || fraction.is_some_and(|f| !digits(f, 2)) {
            return Err(MoneyError::Malformed);
        }
        s.parse::<Decimal>().map_err(|_| MoneyError::Malformed).and_then(Self::from_yuan)
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Money) -> Money {
        Money::from_stored(self.0.checked_sub(other.0).unwrap_or(Decimal::ZERO).max(Decimal::ZERO))
    }

    /// Accepts a yuan amount. Trailing zeros beyond two decimals are fine (`1.500`), real sub-fen digits
    /// are not (`1.005`).
    pub fn from_yuan(yuan: Decimal) -> Result<Self, MoneyError> {
        if yuan.is_sign_negative() && !yuan.is_zero() {
            return Err(MoneyError::Negative);
        }
        let rounded = yuan.round_dp(2);
        if rounded != yuan {
            return Err(MoneyError::SubFen);
        }
        // DECIMAL(12, 2) holds up to 10^10 yuan.
        if rounded >= Decimal::from(10_000_000_000i64) {
            return Err(MoneyError::TooLarge);
        }
        let mut value = rounded;
        value.rescale(2);
        Ok(Money(value))
    }

    /// Reads an amount back from the database. SQLite's driver returns DECIMAL columns through `f64`;
    /// any amount below 2^53 fen survives that exactly once rounded back to two decimals.
    pub fn from_stored(yuan: Decimal) -> Self {
        let mut value = yuan.round_dp(2);
        value.rescale(2);
        Money(value)
    }

    pub fn from_fen(fen: i64) -> Result<Self, MoneyError> {
        Self::from_yuan(Decimal::new(fen, 2))
    }

    /// The exact integer number of fen sent to WeChat as `total_fee`.
    pub fn to_fen(self) -> i64 {
        // Exact: the value has scale 2 and is below 10^12 fen.
        (self.0 * Decimal::from(100)).to_i64().unwrap_or(i64::MAX)
    }

    pub fn yuan(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_decimal_is_an_amount_or_refused_and_amounts_round_trip_through_fen(
            mantissa in any::<i64>(), scale in 0u32..=28,
        ) {
            let yuan = Decimal::new(mantissa, scale);
            if let Ok(m) = Money::from_yuan(yuan) {
                prop_assert!(m.to_fen() >= 0 && m.to_fen() < 1_000_000_000_000);
                prop_assert_eq!(Money::from_fen(m.to_fen()), Ok(m));
                prop_assert_eq!(m.yuan(), yuan);
            }
        }

        #[test]
        fn any_fen_is_an_amount_or_refused(fen in any::<i64>()) {
            if let Ok(m) = Money::from_fen(fen) {
                prop_assert_eq!(m.to_fen(), fen);
            }
        }

        #[test]
        fn every_string_of_the_documented_shape_parses(s in "[0-9]{1,10}(\\.[0-9]{1,2})?") {
            let expected: Decimal = s.parse().unwrap();
            prop_assert_eq!(Money::parse(&s).map(Money::yuan), Ok(expected));
        }

        #[test]
        fn any_text_parses_or_is_refused_and_what_parses_is_an_amount(s in "\\PC{0,16}") {
            if let Ok(m) = Money::parse(&s) {
                prop_assert!(m.to_fen() >= 0 && m.to_fen() < 1_000_000_000_000);
            }
        }

        #[test]
        fn subtraction_never_goes_negative(a in 0i64..1_000_000_000, b in 0i64..1_000_000_000) {
            let (a, b) = (Money::from_fen(a).unwrap(), Money::from_fen(b).unwrap());
            let d = a.saturating_sub(b);
            prop_assert!(d.to_fen() >= 0 && d <= a);
        }
    }
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn converts_yuan_to_exact_fen() {
        assert_eq!(Money::from_yuan(d("10.00")).unwrap().to_fen(), 1000);
        assert_eq!(Money::from_yuan(d("0.01")).unwrap().to_fen(), 1);
        assert_eq!(Money::from_yuan(d("12.3")).unwrap().to_fen(), 1230);
        assert_eq!(Money::from_yuan(d("19.99")).unwrap().to_fen(), 1999);
        assert_eq!(Money::from_yuan(d("1.500")).unwrap().to_fen(), 150);
    }

    #[test]
    fn refuses_sub_fen_negative_and_huge_amounts() {
        assert_eq!(Money::from_yuan(d("1.005")), Err(MoneyError::SubFen));
        assert_eq!(Money::from_yuan(d("-1")), Err(MoneyError::Negative));
        assert_eq!(Money::from_yuan(d("10000000000")), Err(MoneyError::TooLarge));
    }

    #[test]
    fn parses_only_the_documented_shape() {
        assert_eq!(Money::parse("12").unwrap().to_fen(), 1200);
        assert_eq!(Money::parse("12.5").unwrap().to_fen(), 1250);
        assert_eq!(Money::parse("0.01").unwrap().to_fen(), 1);
        assert_eq!(Money::parse("9999999999.99").unwrap().to_fen(), 999_999_999_999);
        for bad in ["", ".5", "5.", "1.005", "1.500", "-1", "+1", "1e2", "1_000", " 1", "1,5", "12345678901", "１２"]
        {
            assert_eq!(Money::parse(bad), Err(MoneyError::Malformed), "{bad}");
        }
    }

    #[test]
    fn displays_two_decimals() {
        assert_eq!(Money::from_yuan(d("12")).unwrap().to_string(), "12.00");
        assert_eq!(Money::from_fen(1).unwrap().to_string(), "0.01");
    }

    #[test]
    fn stored_amounts_survive_the_sqlite_float_path() {
        for fen in [1i64, 10, 999, 1999, 123_456_789, 99_999_999_999] {
            let through_float = Decimal::try_from(fen as f64 / 100.0).unwrap();
            assert_eq!(Money::from_stored(through_float).to_fen(), fen);
        }
    }
}
