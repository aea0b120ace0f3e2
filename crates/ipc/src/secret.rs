//! [`Secret`]: a PIN, password, authenticator code or token, held so that it never shows.
//!
//! Its `Debug` prints `[redacted]` (so a `{:?}` of a form, a request or an error carries no
//! secret into a log), it has no `Display`, and its bytes are zeroed when it is dropped. The
//! text is reached only through [`Secret::expose`], at the one place that needs it (the KDF,
//! the HTTP body). On the wire (IPC, JSON) it is a plain string.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// What `Debug` prints instead of a secret.
pub const REDACTED: &str = "[redacted]";

/// A secret string: redacted in `Debug`, zeroed on drop (see the module doc).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_and_the_wire_form_is_the_string() {
        let pin = Secret::from("worm-lantern-42");
        assert_eq!(format!("{pin:?}"), REDACTED);
        assert_eq!(pin.expose(), "worm-lantern-42");
        assert_eq!(serde_json::to_string(&pin).unwrap(), "\"worm-lantern-42\"");
        let back: Secret = serde_json::from_str("\"worm-lantern-42\"").unwrap();
        assert_eq!(back, pin);
    }

    #[test]
    fn debug_of_a_form_shows_no_secret() {
        let form = crate::EnrolForm {
            server_url: "https://fed.example".into(),
            username: "nurse.demo".into(),
            password: "correct horse battery".into(),
            totp: "314159".into(),
            pin: "802461".into(),
        };
        let shown = format!("{form:?} {form:#?}");
        for secret in ["correct horse battery", "314159", "802461"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("nurse.demo"));
    }
}
