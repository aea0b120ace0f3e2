//! The one rule for a new PIN or passphrase, used by the enrol screen (as it is typed), the
//! device library (at enrolment and at a PIN change) and so the command line.
//!
//! The PIN is what stands between a lost laptop's copied data directory and the cache: every
//! guess costs an Argon2id derivation, so the number of plausible PINs is what counts.
//!
//! # Rule
//!
//! - A **PIN** (digits only) has at least [`MIN_PIN_DIGITS`] digits and is not one digit
//!   repeated (`111111`), a run up or down (`123456`, `987654`, `890123`), or a shorter block
//!   repeated (`121212`, `123123`): the first guesses of anyone.
//! - A **passphrase** (anything with a non-digit) has at least [`MIN_PASSPHRASE_CHARS`]
//!   characters and is not one character repeated.
//! - Either has at most [`MAX_CHARS`] characters.

/// Digits in the shortest PIN accepted.
pub const MIN_PIN_DIGITS: usize = 6;
/// Characters in the shortest passphrase accepted.
pub const MIN_PASSPHRASE_CHARS: usize = 10;
/// The longest PIN or passphrase.
pub const MAX_CHARS: usize = 128;

/// What is wrong with `pin` as a new PIN or passphrase, in words; `None` when it is fine.
pub fn pin_problem(pin: &str) -> Option<String> {
    let chars: Vec<char> = pin.chars().collect();
    if chars.is_empty() {
        return Some("Choose a PIN or passphrase for this device.".into());
    }
    if chars.len() > MAX_CHARS {
        return Some(format!(
            "The PIN or passphrase must have at most {MAX_CHARS} characters."
        ));
    }
    let digits: Option<Vec<u32>> = chars.iter().map(|c| c.to_digit(10)).collect();
    match digits {
        Some(d) => {
            if d.len() < MIN_PIN_DIGITS {
                Some(format!(
                    "A PIN needs at least {MIN_PIN_DIGITS} digits (or use a passphrase of at \
                     least {MIN_PASSPHRASE_CHARS} characters)."
                ))
            } else if is_run(&d) || is_repeated_block(&d) {
                Some(
                    "That PIN is too easy to guess: avoid repeated or consecutive digits \
                     (like 111111, 123456 or 121212)."
                        .into(),
                )
            } else {
                None
            }
        }
        None if chars.len() < MIN_PASSPHRASE_CHARS => Some(format!(
            "A passphrase needs at least {MIN_PASSPHRASE_CHARS} characters (or use a PIN of \
             at least {MIN_PIN_DIGITS} digits)."
        )),
        None if chars.iter().all(|c| *c == chars[0]) => {
            Some("That passphrase is one character repeated: choose another.".into())
        }
        None => None,
    }
}

/// Each digit one more than the last, or each one less (wrapping 9 to 0 and back).
fn is_run(d: &[u32]) -> bool {
    let up = d.windows(2).all(|w| w[1] == (w[0] + 1) % 10);
    let down = d.windows(2).all(|w| w[0] == (w[1] + 1) % 10);
    up || down
}

/// The digits are a shorter block repeated (`111111` is the block `1` repeated).
fn is_repeated_block(d: &[u32]) -> bool {
    (1..=d.len() / 2).any(|n| d.len().is_multiple_of(n) && d.chunks(n).all(|c| c == &d[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_digit_pins_that_are_not_obvious_are_accepted() {
        for pin in ["246813", "975310", "1357902", "5830194"] {
            assert_eq!(pin_problem(pin), None, "{pin}");
        }
    }

    #[test]
    fn short_pins_are_refused_saying_how_long() {
        for pin in ["1", "2468", "24681"] {
            let p = pin_problem(pin).unwrap();
            assert!(p.starts_with("A PIN needs at least 6 digits"), "{pin}: {p}");
        }
    }

    #[test]
    fn repeated_and_consecutive_digits_are_refused() {
        for pin in [
            "111111", "000000", "123456", "654321", "890123", "3210987", "121212", "123123",
            "12341234", "909090",
        ] {
            let p = pin_problem(pin).unwrap_or_default();
            assert!(p.contains("too easy to guess"), "{pin}: {p:?}");
        }
    }

    #[test]
    fn passphrases_need_ten_characters_and_not_one_repeated() {
        assert_eq!(pin_problem("correct horse battery"), None);
        assert_eq!(pin_problem("riverside-7"), None);
        assert!(
            pin_problem("abc12")
                .unwrap()
                .starts_with("A passphrase needs")
        );
        assert!(
            pin_problem("aaaaaaaaaaaa")
                .unwrap()
                .contains("one character repeated")
        );
        assert!(
            pin_problem(&"x9".repeat(65))
                .unwrap()
                .contains("at most 128")
        );
        assert!(pin_problem("").unwrap().starts_with("Choose a PIN"));
    }
}
