//! The six-digit TOTP codes the demo users' authenticators would show (SHA-1, 30 s steps), for
//! tests that sign in for real.

/// The code for `secret` (base32) at Unix time `unix_secs`.
pub fn totp_code_at(secret: &str, unix_secs: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_string())
        .to_bytes()
        .expect("a base32 TOTP secret");
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).generate(unix_secs)
}

/// The code for `secret` at now + `offset_secs`. The server accepts each code once: a second
/// sign-in within the same 30 s step needs the next step's code (`offset_secs = 30`).
pub fn totp_code(secret: &str, offset_secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    totp_code_at(secret, now + offset_secs)
}
