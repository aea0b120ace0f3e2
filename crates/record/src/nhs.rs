//! The NHS number: ten digits, the last a Modulus 11 check digit.
//!
//! Rules (NHS Data Dictionary): multiply the first nine digits by the weights 10, 9, ... 2, sum,
//! take the remainder modulo 11 and subtract it from 11. A result of 11 gives check digit 0; a
//! result of 10 means no valid NHS number has those nine digits. Numbers made of one digit
//! repeated ten times pass the arithmetic for some digits but are never issued, so they are
//! rejected too. The range 999 000 0000 – 999 999 9999 is reserved for test data and never
//! issued to a person.

use serde::{Deserialize, Serialize};

/// A valid NHS number, held as its ten digits.
///
/// Constructed only through [`NhsNumber::parse`] or [`NhsNumber::from_stem`], so every value is
/// valid. Serialises as the ten-digit string; `Display` groups it `3 3 4` (`943 476 5919`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber(String);

/// Why a text is not an NHS number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    #[error("an NHS number has 10 digits, this has {0}")]
    WrongLength(usize),
    #[error("an NHS number contains only digits, spaces and hyphens")]
    NotDigits,
    #[error("the check digit does not match (Modulus 11)")]
    BadCheckDigit,
    #[error("no NHS number has these first nine digits (the check digit would be 10)")]
    InvalidStem,
    #[error("an NHS number cannot be the same digit ten times")]
    AllSameDigit,
}

/// The Modulus 11 check digit of nine digits, or `None` when it would be 10 (invalid).
fn check_digit(stem: &[u8; 9]) -> Option<u8> {
    let sum: u32 = stem
        .iter()
        .zip((2..=10u32).rev())
        .map(|(&d, w)| u32::from(d) * w)
        .sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        c => Some(c as u8),
    }
}

impl NhsNumber {
    /// Reads an NHS number as people type it: `9434765919`, `943 476 5919`, `943-476-5919`.
    pub fn parse(text: &str) -> Result<NhsNumber, NhsNumberError> {
        let mut digits = [0u8; 10];
        let mut n = 0usize;
        for c in text.trim().chars() {
            match c {
                ' ' | '-' => continue,
                '0'..='9' => {
                    if n < 10 {
                        digits[n] = c as u8 - b'0';
                    }
                    n += 1;
                }
                _ => return Err(NhsNumberError::NotDigits),
            }
        }
        if n != 10 {
            return Err(NhsNumberError::WrongLength(n));
        }
        if digits.iter().all(|&d| d == digits[0]) {
            return Err(NhsNumberError::AllSameDigit);
        }
        let stem: [u8; 9] = digits[..9].try_into().expect("nine digits");
        match check_digit(&stem) {
            None => Err(NhsNumberError::InvalidStem),
            Some(c) if c != digits[9] => Err(NhsNumberError::BadCheckDigit),
            Some(_) => Ok(NhsNumber(
                digits.iter().map(|d| (b'0' + d) as char).collect(),
            )),
        }
    }

    /// The NHS number whose first nine digits are `stem` (zero-padded), or `None` when that stem
    /// has no valid check digit (or `stem` has more than nine digits, or the result would be
    /// one digit repeated).
    pub fn from_stem(stem: u64) -> Option<NhsNumber> {
        if stem > 999_999_999 {
            return None;
        }
        let text = format!("{stem:09}");
        let mut digits = [0u8; 9];
        for (d, b) in digits.iter_mut().zip(text.bytes()) {
            *d = b - b'0';
        }
        let check = check_digit(&digits)?;
        NhsNumber::parse(&format!("{text}{check}")).ok()
    }

    /// The ten digits, no spaces.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// True for the range reserved for test data, 999 000 0000 – 999 999 9999.
    pub fn is_test_range(&self) -> bool {
        self.0.starts_with("999")
    }
}

impl std::str::FromStr for NhsNumber {
    type Err = NhsNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NhsNumber::parse(s)
    }
}

impl std::fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", &self.0[..3], &self.0[3..6], &self.0[6..])
    }
}

impl Serialize for NhsNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NhsNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NhsNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_valid_number_with_spaces_and_hyphens() {
        for text in [
            "9434765919",
            "943 476 5919",
            "943-476-5919",
            " 943 476-5919 ",
        ] {
            let n = NhsNumber::parse(text).unwrap();
            assert_eq!(n.digits(), "9434765919");
        }
    }

    #[test]
    fn displays_grouped_three_three_four() {
        let n = NhsNumber::parse("9434765919").unwrap();
        assert_eq!(n.to_string(), "943 476 5919");
    }

    #[test]
    fn rejects_a_wrong_check_digit() {
        assert_eq!(
            NhsNumber::parse("9434765918"),
            Err(NhsNumberError::BadCheckDigit)
        );
    }

    #[test]
    fn check_digit_ten_is_invalid() {
        // 999 123 456: weighted sum 320, 320 mod 11 = 1, 11 - 1 = 10: no valid number.
        assert_eq!(NhsNumber::from_stem(999_123_456), None);
        for last in 0..=9 {
            let text = format!("999123456{last}");
            assert!(NhsNumber::parse(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn check_digit_eleven_becomes_zero() {
        // 999 000 001: 9*10 + 9*9 + 9*8 + 1*2 = 245 = 11*22 + 3 -> 8; find a stem with sum % 11 == 0.
        let stem = (999_000_000..999_001_000u64)
            .find(|s| {
                let t = format!("{s:09}");
                let sum: u32 = t
                    .bytes()
                    .zip((2..=10u32).rev())
                    .map(|(b, w)| u32::from(b - b'0') * w)
                    .sum();
                sum.is_multiple_of(11)
            })
            .unwrap();
        let n = NhsNumber::from_stem(stem).unwrap();
        assert!(n.digits().ends_with('0'));
    }

    #[test]
    fn rejects_all_same_digit() {
        // 1111111111 passes Modulus 11 arithmetic but is never issued.
        assert_eq!(
            NhsNumber::parse("1111111111"),
            Err(NhsNumberError::AllSameDigit)
        );
        assert_eq!(
            NhsNumber::parse("000 000 0000"),
            Err(NhsNumberError::AllSameDigit)
        );
    }

    #[test]
    fn rejects_wrong_length_and_letters() {
        assert_eq!(
            NhsNumber::parse("943476591"),
            Err(NhsNumberError::WrongLength(9))
        );
        assert_eq!(
            NhsNumber::parse("94347659190"),
            Err(NhsNumberError::WrongLength(11))
        );
        assert_eq!(
            NhsNumber::parse("943476591X"),
            Err(NhsNumberError::NotDigits)
        );
        assert_eq!(NhsNumber::parse(""), Err(NhsNumberError::WrongLength(0)));
    }

    #[test]
    fn test_range_predicate() {
        let test = NhsNumber::from_stem(999_000_001).unwrap();
        assert!(test.is_test_range());
        assert!(!NhsNumber::parse("9434765919").unwrap().is_test_range());
    }

    #[test]
    fn from_stem_round_trips_through_parse() {
        let mut valid = 0;
        for stem in 999_000_000..999_000_200u64 {
            if let Some(n) = NhsNumber::from_stem(stem) {
                valid += 1;
                assert_eq!(NhsNumber::parse(n.digits()).unwrap(), n);
                assert!(n.digits().starts_with(&format!("{stem:09}")));
            }
        }
        // About one stem in eleven has check digit 10.
        assert!((170..200).contains(&valid), "{valid}");
        assert_eq!(NhsNumber::from_stem(1_000_000_000), None);
    }

    #[test]
    fn serde_is_the_ten_digit_string() {
        let n = NhsNumber::parse("943 476 5919").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"9434765919\"");
        let back: NhsNumber = serde_json::from_str("\"9434765919\"").unwrap();
        assert_eq!(back, n);
        assert!(serde_json::from_str::<NhsNumber>("\"9434765918\"").is_err());
    }
}
