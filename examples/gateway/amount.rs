//! Money amounts as exact decimals, never binary floats.
//!
//! A transfer's `amount` arrives as a JSON number (`12.5`) or string
//! (`"12.50"`). Both are read from their raw text: a JSON number is never
//! routed through `f64`, where `0.1 + 0.2 != 0.3` and a long literal is
//! silently rounded to something else.

use std::fmt;

/// An amount in minor units (cents).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(u64);

/// Why an amount was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidAmount(pub &'static str);

impl fmt::Display for InvalidAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The largest amount accepted: 10^13 major units, well inside u64 cents.
const MAX_MAJOR_DIGITS: usize = 13;

impl Amount {
    /// From minor units.
    pub const fn from_cents(cents: u64) -> Self {
        Self(cents)
    }

    /// Minor units.
    pub const fn cents(self) -> u64 {
        self.0
    }

    /// Parses `123`, `123.4`, `123.45`: digits, at most two decimals,
    /// positive. No sign, exponent, spaces or leading dot.
    pub fn parse(text: &str) -> Result<Self, InvalidAmount> {
        if text.len() > MAX_MAJOR_DIGITS + 3 {
            return Err(InvalidAmount("amount is too large"));
        }
        let (major, minor) = match text.split_once('.') {
            Some((major, minor)) => (major, Some(minor)),
            None => (text, None),
        };
        if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidAmount("amount must be a plain decimal number"));
        }
        if major.len() > MAX_MAJOR_DIGITS {
            return Err(InvalidAmount("amount is too large"));
        }
        let minor = match minor {
            None => 0,
            Some(m) if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(InvalidAmount("amount must be a plain decimal number"));
            }
            Some(m) if m.len() > 2 => {
                return Err(InvalidAmount("amount has more than 2 decimal places"));
            }
            Some(m) => {
                let v: u64 = m
                    .parse()
                    .map_err(|_| InvalidAmount("amount is malformed"))?;
                if m.len() == 1 { v * 10 } else { v }
            }
        };
        let major: u64 = major
            .parse()
            .map_err(|_| InvalidAmount("amount is malformed"))?;
        let cents = major * 100 + minor;
        if cents == 0 {
            return Err(InvalidAmount("amount must be positive"));
        }
        Ok(Self(cents))
    }

    /// Reads a JSON number or string from its raw JSON text.
    pub fn from_json(raw: &serde_json::value::RawValue) -> Result<Self, InvalidAmount> {
        let text = raw.get();
        if text.starts_with('"') {
            let s: String =
                serde_json::from_str(text).map_err(|_| InvalidAmount("amount is malformed"))?;
            Self::parse(&s)
        } else {
            Self::parse(text)
        }
    }

    /// Adds, refusing overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// Subtracts, refusing to go below zero.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exact_decimals() {
        for (text, cents) in [
            ("1", 100),
            ("0.01", 1),
            ("12.5", 1250),
            ("12.50", 1250),
            ("007.10", 710),
        ] {
            assert_eq!(Amount::parse(text), Ok(Amount::from_cents(cents)), "{text}");
        }
        assert_eq!(Amount::from_cents(1250).to_string(), "12.50");
    }

    #[test]
    fn refuses_everything_else() {
        for text in [
            "",
            "0",
            "0.00",
            "-1",
            "+1",
            "1.",
            ".5",
            "1.234",
            "1e2",
            "1E2",
            " 1",
            "1 ",
            "1,00",
            "NaN",
            "Infinity",
            "12345678901234",
            "0x10",
            "١٢",
        ] {
            assert!(Amount::parse(text).is_err(), "{text:?} must be refused");
        }
    }

    #[test]
    fn json_numbers_are_read_from_their_text() {
        let raw = |s: &str| serde_json::from_str::<Box<serde_json::value::RawValue>>(s).unwrap();
        assert_eq!(
            Amount::from_json(&raw("12.34")),
            Ok(Amount::from_cents(1234))
        );
        assert_eq!(
            Amount::from_json(&raw("\"12.34\"")),
            Ok(Amount::from_cents(1234))
        );
        // Through f64 this would round to 0.1 and pass; as text it has too many places.
        assert!(Amount::from_json(&raw("0.1000000000000000055511151231257827")).is_err());
        assert!(Amount::from_json(&raw("1e2")).is_err());
        assert!(Amount::from_json(&raw("true")).is_err());
        assert!(Amount::from_json(&raw("null")).is_err());
    }
}
