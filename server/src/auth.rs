//! Identity: passwords (Argon2id), TOTP second factor, device tokens.
//!
//! - Enrolment checks the password and a TOTP code (SHA-1, 6 digits, 30 s steps, one step of
//!   clock skew either way). A code is accepted once: the step used is remembered, so a replayed
//!   code fails. Five failures lock the account for 15 minutes.
//! - A successful enrolment registers a device and issues an access token (15 minutes) and a
//!   device-bound refresh token. A refresh token unused for [`REFRESH_IDLE`] expires (the
//!   sliding lifetime), and refreshing never carries a sign-in past [`SESSION_TTL`] (the
//!   absolute lifetime: the stored expiry of a refresh token is its sign-in's end, handed on
//!   at rotation). Both are [`TokenLifetimes`], set per server. Only SHA-256 hashes of tokens
//!   are stored.
//! - A refresh is audited; it ends the access token it replaces, and is refused for a
//!   revoked device (`DeviceRevoked`) or a disabled user (`AccountDisabled`, as is every
//!   bearer request of theirs).
//! - Refreshing rotates the refresh token; presenting an already-rotated refresh token revokes
//!   every token of the device (someone else holds a copy), with one exception: the same
//!   device presenting it again within [`REFRESH_RETRY_GRACE`] of its exchange is answered
//!   again, as often as it asks (its answers were lost in dropped connections, or it stopped
//!   before saving one), every pair issued since being revoked. Presented under another device's id, a refresh
//!   token revokes its own device's tokens.
//! - These rules are decided here, for every backend. A sign-in attempt is counted before its
//!   password is checked, in one conditional write that also checks the lock
//!   ([`Store::claim_sign_in_attempt`]), so parallel wrong guesses get no more tries than
//!   serial ones; a right password and code reset the count. The refresh token's exchange is
//!   conditional on the token still being unused and answers `Stale` when another request
//!   got there first; the rule is then applied again to fresh reads, so two requests (or two
//!   server nodes) never both exchange one refresh token.
//! - Unknown users cost the same Argon2 work as known ones, so timing does not tell them apart.
//! - A member practice's source system imports with its own credential: client id = the
//!   practice's ODS code, secret = 256 random bits made by [`issue_source_secret`] and printed
//!   once; only its SHA-256 is stored. It is sent as HTTP Basic authentication
//!   ([`authenticate_source`]). Issuing a new secret replaces the old one at once.
//! - Kinds of caller, never interchangeable: clinicians (bearer tokens of their devices),
//!   practice systems (Basic `ODS:SECRET`) and federation administrators (Basic `NAME:SECRET`
//!   from [`issue_admin_secret`], SHA-256 stored like a practice's). [`authenticate_admin`]
//!   tells an administrator from a valid credential of another kind (refused with 403 by the
//!   API) and from no or a wrong credential (401); staff, below.
//! - Staff who run a service (receptionists, team leaders, service managers, privacy
//!   officers: [`STAFF_ROLES`]) hold no records: they never enrol a device (refused, 403
//!   `no_device_for_role`) and sign in with password and code for a bearer token of their
//!   own ([`staff_sign_in`], `dst_`, SHA-256 stored, [`STAFF_TTL`], no refresh), which
//!   [`staff_sign_out`] revokes. A clinician cannot sign in as staff. The API and the web
//!   console (`crate::console`, the token in a cookie) use the same token.

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use doorstep_protocol::{
    EnrolRequest, EnrolResponse, ReauthRequest, RefreshRequest, TokenResponse, UserInfo,
};
use sha2::{Digest, Sha256};
use totp_rs::{Rfc6238, Secret, TOTP};

use crate::audit;
use crate::limits::{self, Argon2Gate, Limited};
use crate::store::{
    AdminCredentialRow, AuditEvent, DeviceRow, SignInClaim, SourceCredentialRow, Store, StoreError,
    TokenKind, TokenPair, UserRow,
};
use crate::totp_key::TotpKey;

/// Lifetime of an access token.
pub const ACCESS_TTL: Duration = Duration::minutes(15);
/// How long a refresh token may go unused before it expires (the sliding lifetime).
pub const REFRESH_IDLE: Duration = Duration::days(7);
/// How long a sign-in lasts, however often its tokens are refreshed (the absolute lifetime):
/// then the user signs in again with password and code.
pub const SESSION_TTL: Duration = Duration::days(30);

/// How long tokens live (defaults: [`ACCESS_TTL`], [`REFRESH_IDLE`], [`SESSION_TTL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetimes {
    pub access: Duration,
    pub refresh_idle: Duration,
    pub session: Duration,
}

/// What a server checks sign-ins with: its Argon2 gate, its token lifetimes and the key its
/// users' TOTP secrets are sealed under.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub gate: Argon2Gate,
    pub lifetimes: TokenLifetimes,
    pub totp_key: Arc<TotpKey>,
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        TokenLifetimes {
            access: ACCESS_TTL,
            refresh_idle: REFRESH_IDLE,
            session: SESSION_TTL,
        }
    }
}
/// Failed sign-ins in a row that lock an account.
pub const MAX_FAILURES: u32 = 5;
/// How long a locked account stays locked.
pub const LOCKOUT: Duration = Duration::minutes(15);
/// How long after exchanging a refresh token the same device may present it once more and be
/// answered again (a lost response, a crash before the new pair was saved), instead of the
/// reuse rule revoking the device.
pub const REFRESH_RETRY_GRACE: Duration = Duration::minutes(2);
/// TOTP step in seconds.
pub const TOTP_STEP: u64 = 30;
/// Times a rule is applied again to fresh reads after another request changed them first.
const RACE_ATTEMPTS: usize = 16;

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("the username, password or code is not right")]
    BadCredentials,
    #[error("too many failed sign-ins: the account is locked until {0}")]
    LockedOut(DateTime<Utc>),
    #[error("sign in again: this request carries no valid token")]
    Unauthorized,
    #[error("the access token has expired: refresh it")]
    TokenExpired,
    #[error("this device has been revoked")]
    DeviceRevoked,
    #[error("this account is disabled: ask the federation's administrator")]
    AccountDisabled,
    /// A staff role enrolling a device, or a clinician signing in as staff.
    #[error("{0}")]
    WrongKindOfSignIn(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Turned away before the credentials were checked (too long a username, no place for
    /// the password check).
    #[error(transparent)]
    Limited(#[from] Limited),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system provides random bytes");
    buf
}

/// Hash a password with Argon2id (default parameters: 19 MiB, 2 passes) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, AuthFailure> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| AuthFailure::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthFailure::Internal(e.to_string()))
}

/// Check a password against a PHC string.
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password").expect("hashing works"))
}

/// A TOTP secret to check an unknown user's code against.
fn decoy_totp_secret() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(new_totp_secret)
}

/// A new random TOTP secret (160 bits), base32.
pub fn new_totp_secret() -> String {
    Secret::Raw(random_bytes::<20>().to_vec())
        .to_encoded()
        .to_string()
}

/// A new random password for generated accounts (demo users): 4 groups of 5 letters/digits.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let bytes = random_bytes::<20>();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    chars
        .chunks(5)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

fn totp(secret_b32: &str) -> Result<TOTP, AuthFailure> {
    let bytes = Secret::Encoded(secret_b32.to_string())
        .to_bytes()
        .map_err(|e| AuthFailure::Internal(format!("TOTP secret: {e:?}")))?;
    let rfc = Rfc6238::with_defaults(bytes)
        .map_err(|e| AuthFailure::Internal(format!("TOTP secret: {e}")))?;
    TOTP::from_rfc6238(rfc).map_err(|e| AuthFailure::Internal(format!("TOTP: {e}")))
}

/// The TOTP code for `unix_time` (what an authenticator shows).
pub fn totp_code(secret_b32: &str, unix_time: u64) -> Result<String, AuthFailure> {
    Ok(totp(secret_b32)?.generate(unix_time))
}

/// The time step whose code is `code`, within one step of `unix_time`.
pub fn totp_step_of(
    secret_b32: &str,
    code: &str,
    unix_time: u64,
) -> Result<Option<i64>, AuthFailure> {
    let t = totp(secret_b32)?;
    let step = unix_time / TOTP_STEP;
    for candidate in [step.saturating_sub(1), step, step + 1] {
        let expected = t.generate(candidate * TOTP_STEP);
        if constant_time_eq(expected.as_bytes(), code.trim().as_bytes()) {
            return Ok(Some(candidate as i64));
        }
    }
    Ok(None)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 hex of a token: what the store keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// Make a new token pair of a sign-in that ends at `session_ends`: the tokens for the
/// device, the hashes for the store. The refresh token's stored expiry is the session's end
/// (carried from token to token at rotation); its idle limit is counted from its issue.
fn issue(
    now: DateTime<Utc>,
    lifetimes: &TokenLifetimes,
    session_ends: DateTime<Utc>,
) -> (TokenResponse, TokenPair) {
    let access = new_token("dsa_");
    let refresh = new_token("dsr_");
    let pair = TokenPair {
        access_hash: token_hash(&access),
        access_expires_at: (now + lifetimes.access).min(session_ends),
        refresh_hash: token_hash(&refresh),
        refresh_expires_at: session_ends,
    };
    (
        TokenResponse {
            access_token: access,
            access_expires_at: pair.access_expires_at,
            refresh_token: refresh,
        },
        pair,
    )
}

/// Verify on the blocking pool, once the gate gives a place (else [`Limited::Busy`]).
async fn argon2_verify(
    gate: &Argon2Gate,
    phc: String,
    password: String,
) -> Result<bool, AuthFailure> {
    let _place = gate.enter().await?;
    tokio::task::spawn_blocking(move || verify_password(&phc, &password))
        .await
        .map_err(|e| AuthFailure::Internal(e.to_string()))
}

/// Make the decoy hash now, so the first unknown username costs what a known one does.
pub fn warm_up() {
    decoy_hash();
}

/// Sign in with password and TOTP, register the device, issue its first tokens.
pub async fn enrol(
    store: &dyn Store,
    sign_in: &SignIn,
    request: &EnrolRequest,
    now: DateTime<Utc>,
) -> Result<EnrolResponse, AuthFailure> {
    let device_name = request.device_name.trim();
    if device_name.is_empty() || device_name.chars().count() > 100 {
        return Err(AuthFailure::BadRequest(
            "device_name must be 1 to 100 characters".into(),
        ));
    }
    let user = check_credentials(
        store,
        sign_in,
        &request.username,
        &request.password,
        &request.totp,
        now,
    )
    .await?;
    if is_staff_role(&user.role) {
        audit_sign_in(
            store,
            now,
            &user.username,
            false,
            "staff role enrolling a device",
        )
        .await?;
        return Err(AuthFailure::WrongKindOfSignIn(format!(
            "a {} holds no records on a device: sign in to the console instead",
            user.role
        )));
    }
    let device_id = store.create_device(&user.id, device_name, now).await?;
    let lifetimes = &sign_in.lifetimes;
    let (tokens, pair) = issue(now, lifetimes, now + lifetimes.session);
    store.store_tokens(&device_id, pair, now).await?;
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: format!("user:{}", user.username),
            action: "sign_in".into(),
            patient_id: None,
            detail: serde_json::json!({ "device_id": device_id, "device_name": device_name }),
        },
    )
    .await?;
    tracing::info!(user = %user.username, %device_id, "device enrolled");
    Ok(EnrolResponse {
        device_id,
        user: user_info(&user),
        tokens,
    })
}

/// Password and TOTP of `username`, with the lockout rules: the user when both are right.
/// An unknown (or disabled) user costs the same Argon2 work and gets the same answer as a
/// wrong password. A username longer than [`limits::MAX_USERNAME_CHARS`] is refused first.
async fn check_credentials(
    store: &dyn Store,
    sign_in: &SignIn,
    username: &str,
    password: &str,
    totp: &str,
    now: DateTime<Utc>,
) -> Result<UserRow, AuthFailure> {
    let username = username.trim();
    if username.chars().count() > limits::MAX_USERNAME_CHARS {
        return Err(Limited::UsernameTooLong.into());
    }
    let Some(user) = store.user_by_username(username).await? else {
        argon2_verify(&sign_in.gate, decoy_hash().to_string(), password.to_owned()).await?;
        // The TOTP check a known user gets, on a decoy secret.
        totp_step_of(decoy_totp_secret(), totp, now.timestamp().max(0) as u64)?;
        audit_sign_in(store, now, username, false, "unknown user").await?;
        return Err(AuthFailure::BadCredentials);
    };
    // The attempt is counted before the password is looked at, in one conditional write:
    // parallel wrong guesses each take one of the MAX_FAILURES places, none gets past a lock.
    let last_chance = match store
        .claim_sign_in_attempt(&user.id, now, MAX_FAILURES, now + LOCKOUT)
        .await?
    {
        SignInClaim::Locked(until) => {
            audit_sign_in(store, now, &user.username, false, "locked out").await?;
            return Err(AuthFailure::LockedOut(until));
        }
        SignInClaim::Counted { locked_until } => locked_until,
    };
    let password_ok = argon2_verify(
        &sign_in.gate,
        user.password_hash.clone(),
        password.to_owned(),
    )
    .await?;
    let secret = sign_in
        .totp_key
        .open(&user.username, &user.totp_secret)
        .map_err(|e| AuthFailure::Internal(format!("user {}: {e}", user.id)))?;
    let step = totp_step_of(&secret, totp, now.timestamp().max(0) as u64)?;
    let accepted = match (password_ok && !user.disabled, step) {
        // Resets the count (and the lock this attempt may have set).
        (true, Some(step)) => match store.record_sign_in_success(&user.id, step).await {
            Ok(()) => true,
            Err(StoreError::Conflict(_)) => false,
            Err(e) => return Err(e.into()),
        },
        _ => false,
    };
    if !accepted {
        audit_sign_in(store, now, &user.username, false, "bad credentials").await?;
        return Err(match last_chance {
            Some(until) => AuthFailure::LockedOut(until),
            None => AuthFailure::BadCredentials,
        });
    }
    Ok(user)
}

/// Sign in again on an enrolled device (after too many wrong PINs there): the device's
/// tokens are replaced by a new pair; its id, and so its cursor, stay. Only the device's own
/// user may do it, and not on a revoked device.
pub async fn reauthenticate(
    store: &dyn Store,
    sign_in: &SignIn,
    request: &ReauthRequest,
    now: DateTime<Utc>,
) -> Result<TokenResponse, AuthFailure> {
    let user = check_credentials(
        store,
        sign_in,
        &request.username,
        &request.password,
        &request.totp,
        now,
    )
    .await?;
    let device = match store.device(&request.device_id).await? {
        Some(d) if d.user_id == user.id => d,
        // Another user's device or none: the same answer as bad credentials.
        _ => {
            audit_sign_in(store, now, &user.username, false, "not this user's device").await?;
            return Err(AuthFailure::BadCredentials);
        }
    };
    if device.revoked_at.is_some() {
        return Err(AuthFailure::DeviceRevoked);
    }
    store.revoke_device_tokens(&device.id, now).await?;
    let lifetimes = &sign_in.lifetimes;
    let (tokens, pair) = issue(now, lifetimes, now + lifetimes.session);
    store.store_tokens(&device.id, pair, now).await?;
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: format!("user:{}", user.username),
            action: "sign_in_again".into(),
            patient_id: None,
            detail: serde_json::json!({ "device_id": device.id }),
        },
    )
    .await?;
    tracing::info!(user = %user.username, device_id = %device.id, "signed in again on a device");
    Ok(tokens)
}

/// What presenting a refresh token came to.
#[derive(Debug)]
enum RotateOutcome {
    /// The old refresh token was valid; the new pair is stored.
    Rotated(TokenResponse, UserRow),
    /// The device presented again, within [`REFRESH_RETRY_GRACE`], the refresh token it had
    /// just exchanged: the pairs issued since are revoked and the new one stored.
    Retried(TokenResponse, UserRow),
    /// No such refresh token for this device.
    Unknown,
    /// The refresh token had already been used: all the device's tokens are now revoked.
    Reused,
    /// Unused for longer than the idle lifetime, or its sign-in's absolute lifetime is over.
    Expired,
    DeviceRevoked,
    /// The device's user is disabled (or gone).
    AccountDisabled,
}

/// Exchange the device's refresh token `old_hash` for a new pair of the same sign-in,
/// applying the rules in order: unknown token, another device's token, revoked (or unknown)
/// device, disabled user, retry within the grace, reuse (revoke the device's tokens), expiry
/// (idle or absolute).
async fn rotate(
    store: &dyn Store,
    lifetimes: &TokenLifetimes,
    device_id: &str,
    old_hash: &str,
    now: DateTime<Utc>,
) -> Result<RotateOutcome, AuthFailure> {
    for _ in 0..RACE_ATTEMPTS {
        let Some(token) = store
            .token(old_hash)
            .await?
            .filter(|t| t.kind == TokenKind::Refresh)
        else {
            return Ok(RotateOutcome::Unknown);
        };
        if token.device_id != device_id {
            // Another device's refresh token: a copy is loose. Revoke the owner's tokens.
            store.revoke_device_tokens(&token.device_id, now).await?;
            return Ok(RotateOutcome::Reused);
        }
        let Some(device) = store
            .device(device_id)
            .await?
            .filter(|d| d.revoked_at.is_none())
        else {
            return Ok(RotateOutcome::DeviceRevoked);
        };
        let Some(user) = store
            .user_by_id(&device.user_id)
            .await?
            .filter(|u| !u.disabled)
        else {
            return Ok(RotateOutcome::AccountDisabled);
        };
        // The sign-in's end, carried from token to token: refreshing never extends it.
        let session_ends = token.expires_at;
        if session_ends <= now {
            return Ok(RotateOutcome::Expired);
        }
        let (tokens, pair) = issue(now, lifetimes, session_ends);
        let retry = token
            .used_at
            .is_some_and(|used| now - used <= REFRESH_RETRY_GRACE);
        if retry {
            // The device is asking again for an answer it never stored (the response was
            // lost, or it stopped before saving it), perhaps not for the first time: every
            // pair issued since is revoked, and this answer's pair is the device's one live
            // pair. Any number of times within the grace (a cutting network can lose several
            // answers in a row); after it, the token is reuse.
            store.revoke_device_tokens(device_id, now).await?;
            store.store_tokens(device_id, pair, now).await?;
            return Ok(RotateOutcome::Retried(tokens, user));
        }
        if token.used_at.is_some() || token.revoked_at.is_some() {
            // A rotated refresh token came back: someone holds a copy. Revoke the family.
            store.revoke_device_tokens(device_id, now).await?;
            return Ok(RotateOutcome::Reused);
        }
        if now - token.issued_at > lifetimes.refresh_idle {
            return Ok(RotateOutcome::Expired);
        }
        match store.exchange_refresh(device_id, old_hash, pair, now).await {
            Ok(()) => return Ok(RotateOutcome::Rotated(tokens, user)),
            // Exchanged or revoked since it was read: decide again on what it is now.
            Err(StoreError::Stale(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AuthFailure::Internal(
        "the refresh token kept changing".into(),
    ))
}

async fn audit_sign_in(
    store: &dyn Store,
    now: DateTime<Utc>,
    username: &str,
    ok: bool,
    why: &str,
) -> Result<(), AuthFailure> {
    tracing::warn!(user = %limits::loggable(username), why, "sign-in refused");
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: format!("user:{username}"),
            action: if ok { "sign_in" } else { "sign_in_failed" }.into(),
            patient_id: None,
            detail: serde_json::json!({ "why": why }),
        },
    )
    .await?;
    Ok(())
}

pub fn user_info(user: &UserRow) -> UserInfo {
    UserInfo {
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        role: user.role.clone(),
        service: user.service_name.clone(),
    }
}

/// Exchange a refresh token for a new pair (rotation), audited. The device's earlier access
/// token stops working; the new pair ends with the sign-in ([`TokenLifetimes::session`]).
pub async fn refresh(
    store: &dyn Store,
    lifetimes: &TokenLifetimes,
    request: &RefreshRequest,
    now: DateTime<Utc>,
) -> Result<TokenResponse, AuthFailure> {
    let outcome = rotate(
        store,
        lifetimes,
        &request.device_id,
        &token_hash(&request.refresh_token),
        now,
    )
    .await?;
    let device_event = |action: &str| AuditEvent {
        at: now,
        actor: format!("device:{}", request.device_id),
        action: action.into(),
        patient_id: None,
        detail: serde_json::json!({}),
    };
    let user_event = |action: &str, user: &UserRow| AuditEvent {
        at: now,
        actor: format!("user:{}", user.username),
        action: action.into(),
        patient_id: None,
        detail: serde_json::json!({ "device_id": request.device_id }),
    };
    match outcome {
        RotateOutcome::Rotated(tokens, user) => {
            audit::append(store, user_event("refresh", &user)).await?;
            Ok(tokens)
        }
        RotateOutcome::Retried(tokens, user) => {
            tracing::info!(device_id = %request.device_id, "refresh retried within the grace");
            audit::append(store, user_event("refresh_retried", &user)).await?;
            Ok(tokens)
        }
        RotateOutcome::DeviceRevoked => Err(AuthFailure::DeviceRevoked),
        RotateOutcome::AccountDisabled => {
            audit::append(store, device_event("refresh_refused_disabled")).await?;
            Err(AuthFailure::AccountDisabled)
        }
        RotateOutcome::Expired => Err(AuthFailure::TokenExpired),
        RotateOutcome::Unknown => Err(AuthFailure::Unauthorized),
        RotateOutcome::Reused => {
            tracing::warn!(device_id = %request.device_id, "refresh token reused: device tokens revoked");
            audit::append(store, device_event("refresh_reused")).await?;
            Err(AuthFailure::Unauthorized)
        }
    }
}

/// Who a bearer access token belongs to.
pub async fn authenticate(
    store: &dyn Store,
    access_token: &str,
    now: DateTime<Utc>,
) -> Result<(DeviceRow, UserRow), AuthFailure> {
    let token = store
        .token(&token_hash(access_token))
        .await?
        .filter(|t| t.kind == TokenKind::Access)
        .ok_or(AuthFailure::Unauthorized)?;
    let device = store
        .device(&token.device_id)
        .await?
        .ok_or(AuthFailure::Unauthorized)?;
    if device.revoked_at.is_some() {
        return Err(AuthFailure::DeviceRevoked);
    }
    if token.revoked_at.is_some() {
        return Err(AuthFailure::Unauthorized);
    }
    if token.expires_at <= now {
        return Err(AuthFailure::TokenExpired);
    }
    let user = store
        .user_by_id(&device.user_id)
        .await?
        .ok_or(AuthFailure::Unauthorized)?;
    if user.disabled {
        return Err(AuthFailure::AccountDisabled);
    }
    Ok((device, user))
}

/// Make a new secret for the source system of member practice `ods`, replacing any earlier
/// one, and audit it. Answers the secret: it is shown once and never stored.
pub async fn issue_source_secret(
    store: &dyn Store,
    ods: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<String, AuthFailure> {
    let secret = new_token("dps_");
    store
        .put_source_credential(SourceCredentialRow {
            ods: ods.to_string(),
            secret_hash: token_hash(&secret),
            created_at: now,
        })
        .await?;
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: "source_credential_issued".into(),
            patient_id: None,
            detail: serde_json::json!({ "practice": ods }),
        },
    )
    .await?;
    Ok(secret)
}

/// Which member practice an `Authorization` header value (HTTP Basic, `ODS:secret`) names,
/// when its secret is the one issued last.
pub async fn authenticate_source(
    store: &dyn Store,
    authorization: Option<&str>,
) -> Result<String, AuthFailure> {
    let encoded = authorization
        .and_then(|h| h.strip_prefix("Basic "))
        .ok_or(AuthFailure::Unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthFailure::BadRequest("the Basic credentials are not base64".into()))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| AuthFailure::BadRequest("the Basic credentials are not UTF-8".into()))?;
    let (ods, secret) = decoded
        .split_once(':')
        .ok_or_else(|| AuthFailure::BadRequest("Basic credentials are id:secret".into()))?;
    let credential = store.source_credential(ods).await?;
    // Hash even for an unknown practice, so timing does not tell the two apart.
    let presented = token_hash(secret);
    match credential {
        Some(c) if constant_time_eq(c.secret_hash.as_bytes(), presented.as_bytes()) => Ok(c.ods),
        _ => Err(AuthFailure::BadCredentials),
    }
}

/// Make a new credential for federation administrator `name` (letters, digits, `.`, `-`,
/// `_`), replacing any earlier one, and audit it. Answers the secret: shown once, only its
/// SHA-256 is kept. It is sent as HTTP Basic `NAME:SECRET` on `/api/v1/admin/...`.
pub async fn issue_admin_secret(
    store: &dyn Store,
    name: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<String, AuthFailure> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(AuthFailure::BadRequest(format!(
            "{name:?} is not an administrator name (letters, digits, '.', '-', '_')"
        )));
    }
    let secret = new_token("dpa_");
    store
        .put_admin_credential(AdminCredentialRow {
            name: name.to_string(),
            secret_hash: token_hash(&secret),
            created_at: now,
        })
        .await?;
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: "admin_credential_issued".into(),
            patient_id: None,
            detail: serde_json::json!({ "admin": name }),
        },
    )
    .await?;
    Ok(secret)
}

/// Who presents an `Authorization` header on an administration route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCaller {
    /// A federation administrator (by name).
    Administrator(String),
    /// A valid credential of another kind of caller: a clinician's device token or a
    /// practice system's credential. Administration refuses it (403).
    OtherKind(&'static str),
}

/// Which administrator an `Authorization` header names (HTTP Basic `NAME:SECRET`). A
/// clinician's valid bearer token or a practice's valid Basic credential answers
/// [`AdminCaller::OtherKind`]; anything else (no header, wrong secret) `Unauthorized` or
/// `BadCredentials`.
pub async fn authenticate_admin(
    store: &dyn Store,
    authorization: Option<&str>,
    now: DateTime<Utc>,
) -> Result<AdminCaller, AuthFailure> {
    let header = authorization.ok_or(AuthFailure::Unauthorized)?;
    if let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    {
        authenticate(store, token.trim(), now).await?;
        return Ok(AdminCaller::OtherKind("a clinician's device token"));
    }
    let encoded = header
        .strip_prefix("Basic ")
        .ok_or(AuthFailure::Unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthFailure::BadRequest("the Basic credentials are not base64".into()))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| AuthFailure::BadRequest("the Basic credentials are not UTF-8".into()))?;
    let (name, secret) = decoded
        .split_once(':')
        .ok_or_else(|| AuthFailure::BadRequest("Basic credentials are id:secret".into()))?;
    let presented = token_hash(secret);
    if let Some(c) = store.admin_credential(name).await?
        && constant_time_eq(c.secret_hash.as_bytes(), presented.as_bytes())
    {
        return Ok(AdminCaller::Administrator(c.name));
    }
    if authenticate_source(store, authorization).await.is_ok() {
        return Ok(AdminCaller::OtherKind("a practice system's credential"));
    }
    Err(AuthFailure::BadCredentials)
}

// ---------- staff sign-in ----------

/// Roles that run a service rather than see patients: they sign in as staff, never on a device.
pub const STAFF_ROLES: &[&str] = &[
    "receptionist",
    "team_leader",
    "service_manager",
    PRIVACY_OFFICER,
];

/// The role of the federation's privacy officer: answers break-glass alerts and access
/// requests (who accessed a patient) in the console.
pub const PRIVACY_OFFICER: &str = "privacy_officer";

/// How long a staff sign-in lasts (a working day); then password and code again.
pub const STAFF_TTL: Duration = Duration::hours(10);

pub fn is_staff_role(role: &str) -> bool {
    STAFF_ROLES.contains(&role)
}

/// A staff sign-in's answer: the bearer token (shown once) and who it is.
#[derive(Clone, serde::Serialize)]
pub struct StaffSignedIn {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub service_id: String,
    pub practice_ods: Option<String>,
}

impl std::fmt::Debug for StaffSignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffSignedIn")
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Sign a staff member in with password and TOTP (the lockout rules of a device's sign-in):
/// a bearer token for [`STAFF_TTL`], audited `staff_sign_in`.
pub async fn staff_sign_in(
    store: &dyn Store,
    sign_in: &SignIn,
    username: &str,
    password: &str,
    totp: &str,
    now: DateTime<Utc>,
) -> Result<StaffSignedIn, AuthFailure> {
    let user = check_credentials(store, sign_in, username, password, totp, now).await?;
    if !is_staff_role(&user.role) {
        audit_sign_in(
            store,
            now,
            &user.username,
            false,
            "clinician signing in as staff",
        )
        .await?;
        return Err(AuthFailure::WrongKindOfSignIn(format!(
            "a {} signs in on their device; the console is for {}",
            user.role,
            STAFF_ROLES.join(", ")
        )));
    }
    let token = new_token("dst_");
    let expires_at = now + STAFF_TTL;
    store
        .put_staff_token(crate::store::StaffTokenRow {
            hash: token_hash(&token),
            user_id: user.id.clone(),
            issued_at: now,
            expires_at,
            revoked_at: None,
        })
        .await?;
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: format!("user:{}", user.username),
            action: "staff_sign_in".into(),
            patient_id: None,
            detail: serde_json::json!({ "role": user.role }),
        },
    )
    .await?;
    tracing::info!(user = %user.username, role = %user.role, "staff signed in");
    Ok(StaffSignedIn {
        token,
        expires_at,
        username: user.username,
        display_name: user.display_name,
        role: user.role,
        service_id: user.service_id,
        practice_ods: user.practice_ods,
    })
}

/// End a staff sign-in: its token stops working at once (audited `staff_sign_out`).
/// `Unauthorized` when the token is not a live staff token.
pub async fn staff_sign_out(
    store: &dyn Store,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(), AuthFailure> {
    let hash = token_hash(token);
    let row = store
        .staff_token(&hash)
        .await?
        .filter(|t| t.revoked_at.is_none() && t.expires_at > now)
        .ok_or(AuthFailure::Unauthorized)?;
    let username = store
        .user_by_id(&row.user_id)
        .await?
        .map(|u| u.username)
        .unwrap_or_default();
    let event = AuditEvent {
        at: now,
        actor: format!("user:{username}"),
        action: "staff_sign_out".into(),
        patient_id: None,
        detail: serde_json::json!({ "issued_at": row.issued_at }),
    };
    match store
        .write_staff_token_revoked(&hash, now, event, audit::seal)
        .await
    {
        Ok(_) => {}
        // Signed out by a parallel request: the token is dead either way.
        Err(StoreError::NotFound(_)) => return Err(AuthFailure::Unauthorized),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user = %username, "staff signed out");
    Ok(())
}

/// Who presents an `Authorization` header on a staff route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaffCaller {
    /// A staff member signed in (any staff role: the route checks which).
    Staff(Box<UserRow>),
    /// A valid credential of another kind of caller (refused with 403).
    OtherKind(&'static str),
}

/// Which staff member a bearer token names; a device's token, a practice's or an
/// administrator's credential answers [`StaffCaller::OtherKind`]; none or a wrong one
/// `Unauthorized`.
pub async fn authenticate_staff(
    store: &dyn Store,
    authorization: Option<&str>,
    now: DateTime<Utc>,
) -> Result<StaffCaller, AuthFailure> {
    let header = authorization.ok_or(AuthFailure::Unauthorized)?;
    let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
    else {
        return match authenticate_admin(store, authorization, now).await? {
            AdminCaller::Administrator(_) => Ok(StaffCaller::OtherKind(
                "a federation administrator's credential",
            )),
            AdminCaller::OtherKind(kind) => Ok(StaffCaller::OtherKind(kind)),
        };
    };
    if !token.starts_with("dst_") {
        authenticate(store, token, now).await?;
        return Ok(StaffCaller::OtherKind("a clinician's device token"));
    }
    let row = store
        .staff_token(&token_hash(token))
        .await?
        .filter(|t| t.revoked_at.is_none())
        .ok_or(AuthFailure::Unauthorized)?;
    // No refresh for staff: an expired sign-in signs in again.
    if row.expires_at <= now {
        return Err(AuthFailure::Unauthorized);
    }
    let user = store
        .user_by_id(&row.user_id)
        .await?
        .ok_or(AuthFailure::Unauthorized)?;
    if user.disabled {
        return Err(AuthFailure::AccountDisabled);
    }
    Ok(StaffCaller::Staff(Box::new(user)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::{self, DatabaseUrl, NewUser, ServiceRow};

    fn test_sign_in() -> SignIn {
        SignIn {
            gate: Argon2Gate::new(4, std::time::Duration::from_secs(30)),
            lifetimes: TokenLifetimes::default(),
            totp_key: Arc::new(TotpKey::from_bytes([3; 32], "test".into())),
        }
    }

    /// A store with one user (and one device of theirs when asked).
    async fn store_with_user() -> (Arc<dyn Store>, UserRow, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&DatabaseUrl::in_data_dir(dir.path()))
            .await
            .unwrap();
        store
            .upsert_service(ServiceRow {
                id: "dn".into(),
                name: "DN".into(),
            })
            .await
            .unwrap();
        store
            .create_user(
                NewUser {
                    username: "nurse".into(),
                    display_name: "Nurse".into(),
                    role: "nurse".into(),
                    service_id: "dn".into(),
                    password_hash: "unused".into(),
                    totp_secret: test_sign_in().totp_key.seal("nurse", &new_totp_secret()),
                    practice_ods: None,
                },
                Utc::now(),
            )
            .await
            .unwrap();
        let user = store.user_by_username("nurse").await.unwrap().unwrap();
        (store, user, dir)
    }

    /// Regression: the lock was checked on a read and the failure counted after the
    /// Argon2 work, so parallel wrong guesses all got checked (20 at once, 20 guesses).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raced_lockout_gives_no_more_guesses_than_serial_ones() {
        let (store, user, _dir) = store_with_user().await;
        let gate = test_sign_in();
        let now = Utc::now();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (store, gate) = (Arc::clone(&store), gate.clone());
                tokio::spawn(async move {
                    check_credentials(store.as_ref(), &gate, "nurse", "guess", "000000", now).await
                })
            })
            .collect();
        let (mut bad, mut locked) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Err(AuthFailure::BadCredentials) => bad += 1,
                Err(AuthFailure::LockedOut(until)) => {
                    assert_eq!(until.timestamp(), (now + LOCKOUT).timestamp());
                    locked += 1
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((bad, locked), (MAX_FAILURES - 1, 20 - (MAX_FAILURES - 1)));
        let checked = store
            .audit_rows()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event.detail["why"] == "bad credentials")
            .count();
        assert_eq!(
            checked, MAX_FAILURES as usize,
            "only five guesses were checked"
        );
        let stored = store.user_by_id(&user.id).await.unwrap().unwrap();
        assert_eq!(stored.failed_attempts, 0);
        assert_eq!(
            stored.locked_until.map(|t| t.timestamp()),
            Some((now + LOCKOUT).timestamp())
        );
        // After the lock the count starts again: five more guesses, not one.
        let later = now + LOCKOUT + Duration::seconds(1);
        for n in 1..MAX_FAILURES {
            assert!(
                matches!(
                    check_credentials(store.as_ref(), &gate, "nurse", "guess", "000000", later)
                        .await,
                    Err(AuthFailure::BadCredentials)
                ),
                "guess {n} after the lock"
            );
        }
        assert!(matches!(
            check_credentials(store.as_ref(), &gate, "nurse", "guess", "000000", later).await,
            Err(AuthFailure::LockedOut(_))
        ));
    }

    /// The first pair of a sign-in at `now`, with the default lifetimes.
    fn first_pair(now: DateTime<Utc>) -> (TokenResponse, TokenPair) {
        issue(now, &TokenLifetimes::default(), now + SESSION_TTL)
    }

    /// A device of the nurse's with its first pair, signed in at `now`.
    async fn signed_in(
        store: &dyn Store,
        user: &UserRow,
        now: DateTime<Utc>,
    ) -> (String, TokenResponse) {
        let device = store.create_device(&user.id, "laptop", now).await.unwrap();
        let (tokens, pair) = first_pair(now);
        store.store_tokens(&device, pair, now).await.unwrap();
        (device, tokens)
    }

    #[tokio::test]
    async fn a_refresh_token_unused_past_its_idle_life_is_expired() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let (device, tokens) = signed_in(store.as_ref(), &user, now).await;
        let late = now + REFRESH_IDLE + Duration::seconds(1);
        assert!(matches!(
            present(store.as_ref(), &device, &tokens.refresh_token, late).await,
            Err(AuthFailure::TokenExpired)
        ));
        // Within it, the same token still works.
        let in_time = now + REFRESH_IDLE - Duration::seconds(1);
        present(store.as_ref(), &device, &tokens.refresh_token, in_time)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn refreshing_never_extends_a_sign_in_past_its_absolute_life() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let (device, mut tokens) = signed_in(store.as_ref(), &user, now).await;
        // Refreshed every six days, inside the idle life, the sign-in still ends at 30 days.
        let mut at = now;
        while at + Duration::days(6) < now + SESSION_TTL {
            at += Duration::days(6);
            tokens = present(store.as_ref(), &device, &tokens.refresh_token, at)
                .await
                .unwrap();
            assert!(tokens.access_expires_at <= now + SESSION_TTL);
        }
        let after = now + SESSION_TTL + Duration::seconds(1);
        assert!(matches!(
            present(store.as_ref(), &device, &tokens.refresh_token, after).await,
            Err(AuthFailure::TokenExpired)
        ));
    }

    #[tokio::test]
    async fn the_previous_access_token_stops_working_at_rotation_and_refreshes_are_audited() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let (device, first) = signed_in(store.as_ref(), &user, now).await;
        assert!(works(store.as_ref(), &first, now).await);
        let next = present(store.as_ref(), &device, &first.refresh_token, now)
            .await
            .unwrap();
        assert!(works(store.as_ref(), &next, now).await);
        assert!(
            !works(store.as_ref(), &first, now).await,
            "the old access token still worked after rotation"
        );
        let refreshes: Vec<_> = store
            .audit_rows()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event.action == "refresh")
            .collect();
        assert_eq!(refreshes.len(), 1);
        assert_eq!(refreshes[0].event.actor, "user:nurse");
        assert_eq!(refreshes[0].event.detail["device_id"], device.as_str());
    }

    #[tokio::test]
    async fn a_forged_refresh_token_is_refused() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let (device, _) = signed_in(store.as_ref(), &user, now).await;
        let forged = new_token("dsr_");
        assert!(matches!(
            present(store.as_ref(), &device, &forged, now).await,
            Err(AuthFailure::Unauthorized)
        ));
    }

    /// Presents `refresh` for `device` at `at`.
    async fn present(
        store: &dyn Store,
        device: &str,
        refresh_token: &str,
        at: DateTime<Utc>,
    ) -> Result<TokenResponse, AuthFailure> {
        let request = RefreshRequest {
            device_id: device.to_string(),
            refresh_token: refresh_token.to_string(),
        };
        super::refresh(store, &TokenLifetimes::default(), &request, at).await
    }

    async fn works(store: &dyn Store, tokens: &TokenResponse, at: DateTime<Utc>) -> bool {
        authenticate(store, &tokens.access_token, at).await.is_ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_racing_refreshes_of_one_device_leave_it_exactly_one_live_pair() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let device = store.create_device(&user.id, "laptop", now).await.unwrap();
        let (first, pair) = first_pair(now);
        store.store_tokens(&device, pair, now).await.unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (store, device, token) = (
                    Arc::clone(&store),
                    device.clone(),
                    first.refresh_token.clone(),
                );
                tokio::spawn(async move { present(store.as_ref(), &device, &token, now).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(
                task.await
                    .unwrap()
                    .expect("a retry within the grace is answered"),
            );
        }
        let live: Vec<bool> = {
            let mut v = Vec::new();
            for a in &answers {
                v.push(works(store.as_ref(), a, now).await);
            }
            v
        };
        assert_eq!(
            live.iter().filter(|l| **l).count(),
            1,
            "exactly one of the two answers is live: {live:?}"
        );
        assert!(!works(store.as_ref(), &first, now).await);
    }

    /// The sync fault: the refresh response was lost (or the device crashed before saving
    /// it), so the device presents the same refresh token again. It must not be revoked.
    #[tokio::test]
    async fn a_lost_refresh_answer_is_given_again_once_within_the_grace() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let device = store.create_device(&user.id, "laptop", now).await.unwrap();
        let (first, pair) = first_pair(now);
        store.store_tokens(&device, pair, now).await.unwrap();
        let lost = present(store.as_ref(), &device, &first.refresh_token, now)
            .await
            .unwrap();
        let later = now + Duration::seconds(20);
        let again = present(store.as_ref(), &device, &first.refresh_token, later)
            .await
            .expect("the retry is answered");
        assert!(works(store.as_ref(), &again, later).await);
        assert!(
            !works(store.as_ref(), &lost, later).await,
            "the lost answer's pair no longer works"
        );
        // The device goes on refreshing normally.
        let next = present(store.as_ref(), &device, &again.refresh_token, later)
            .await
            .unwrap();
        assert!(works(store.as_ref(), &next, later).await);
        let actions: Vec<String> = store
            .audit_rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event.action)
            .collect();
        assert!(
            actions.contains(&"refresh_retried".to_string()),
            "{actions:?}"
        );
    }

    /// Regression (found by tests/tests/cutting_proxy.rs): two lost answers to one refresh
    /// signed the device out, as the grace answered a retry only once.
    #[tokio::test]
    async fn retries_within_the_grace_are_answered_and_reuse_after_it_revokes() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let device = store.create_device(&user.id, "laptop", now).await.unwrap();
        let (first, pair) = first_pair(now);
        store.store_tokens(&device, pair, now).await.unwrap();
        let mut answers = vec![
            present(store.as_ref(), &device, &first.refresh_token, now)
                .await
                .unwrap(),
        ];
        for s in [10, 20, 90] {
            let at = now + Duration::seconds(s);
            answers.push(
                present(store.as_ref(), &device, &first.refresh_token, at)
                    .await
                    .expect("every retry within the grace is answered"),
            );
        }
        let at = now + Duration::seconds(90);
        let (last, earlier) = answers.split_last().unwrap();
        assert!(works(store.as_ref(), last, at).await);
        for a in earlier {
            assert!(
                !works(store.as_ref(), a, at).await,
                "only the last answer lives"
            );
        }
        // After the grace, presenting it again is reuse: the device's tokens are revoked.
        let late = now + REFRESH_RETRY_GRACE + Duration::seconds(1);
        assert!(matches!(
            present(store.as_ref(), &device, &first.refresh_token, late).await,
            Err(AuthFailure::Unauthorized)
        ));
        assert!(!works(store.as_ref(), last, late).await);
        // The device goes on normally with its last answer when it got it: here it did not,
        // so it must sign in again; a device that kept its answer refreshes as usual.
        let device = store.create_device(&user.id, "tablet", now).await.unwrap();
        let (first, pair) = first_pair(now);
        store.store_tokens(&device, pair, now).await.unwrap();
        let kept = present(store.as_ref(), &device, &first.refresh_token, now)
            .await
            .unwrap();
        let next = present(store.as_ref(), &device, &kept.refresh_token, late)
            .await
            .unwrap();
        assert!(works(store.as_ref(), &next, late).await);
    }

    #[tokio::test]
    async fn a_refresh_token_presented_for_another_device_revokes_its_own() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let owner = store.create_device(&user.id, "laptop", now).await.unwrap();
        let other = store.create_device(&user.id, "stolen?", now).await.unwrap();
        let (tokens, pair) = first_pair(now);
        store.store_tokens(&owner, pair, now).await.unwrap();
        assert!(matches!(
            present(store.as_ref(), &other, &tokens.refresh_token, now).await,
            Err(AuthFailure::Unauthorized)
        ));
        assert!(!works(store.as_ref(), &tokens, now).await);
        assert!(matches!(
            present(store.as_ref(), &owner, &tokens.refresh_token, now).await,
            Err(AuthFailure::Unauthorized)
        ));
    }

    #[test]
    fn password_hash_is_argon2id_and_verifies() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password(&phc, "correct horse"));
        assert!(!verify_password(&phc, "correct horse "));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn totp_accepts_one_step_of_skew_only() {
        let secret = new_totp_secret();
        let t = 1_768_000_000u64;
        let code = totp_code(&secret, t).unwrap();
        assert_eq!(code.len(), 6);
        let step = (t / TOTP_STEP) as i64;
        assert_eq!(totp_step_of(&secret, &code, t).unwrap(), Some(step));
        assert_eq!(totp_step_of(&secret, &code, t + 30).unwrap(), Some(step));
        assert_eq!(totp_step_of(&secret, &code, t - 30).unwrap(), Some(step));
        assert_eq!(totp_step_of(&secret, &code, t + 90).unwrap(), None);
        assert_eq!(totp_step_of(&secret, "000000x", t).unwrap(), None);
    }

    #[test]
    fn totp_matches_rfc6238_sha1_vector() {
        // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s -> 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let secret = Secret::Raw(b"12345678901234567890".to_vec())
            .to_encoded()
            .to_string();
        assert_eq!(totp_code(&secret, 59).unwrap(), "287082");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, pair) = first_pair(Utc::now());
        let (b, _) = first_pair(Utc::now());
        assert_ne!(a.access_token, b.access_token);
        assert_eq!(pair.access_hash, token_hash(&a.access_token));
        assert_ne!(pair.access_hash, a.access_token);
        assert!(a.access_token.starts_with("dsa_") && a.refresh_token.starts_with("dsr_"));
    }

    #[test]
    fn random_passwords_differ() {
        let a = random_password();
        assert_eq!(a.len(), 23);
        assert_ne!(a, random_password());
    }

    #[tokio::test]
    async fn a_staff_token_expires_without_refresh_and_stops_when_the_user_is_disabled() {
        let (store, user, _dir) = store_with_user().await;
        let now = Utc::now();
        let token = |name: &str, expires: DateTime<Utc>| {
            let (store, user) = (Arc::clone(&store), user.clone());
            let token = format!("dst_{name}");
            async move {
                store
                    .put_staff_token(crate::store::StaffTokenRow {
                        hash: token_hash(&token),
                        user_id: user.id,
                        issued_at: now - STAFF_TTL,
                        expires_at: expires,
                        revoked_at: None,
                    })
                    .await
                    .unwrap();
                format!("Bearer {token}")
            }
        };
        let live = token("live", now + Duration::hours(1)).await;
        let old = token("old", now).await;
        assert!(matches!(
            authenticate_staff(store.as_ref(), Some(&live), now).await,
            Ok(StaffCaller::Staff(u)) if u.id == user.id
        ));
        assert!(matches!(
            authenticate_staff(store.as_ref(), Some(&old), now).await,
            Err(AuthFailure::Unauthorized)
        ));
        assert!(matches!(
            authenticate_staff(store.as_ref(), Some("Bearer dst_unknown"), now).await,
            Err(AuthFailure::Unauthorized)
        ));
        assert!(matches!(
            authenticate_staff(store.as_ref(), None, now).await,
            Err(AuthFailure::Unauthorized)
        ));
        store
            .write_account(
                &user.id,
                crate::store::AccountWrite::Disabled(true),
                AuditEvent {
                    at: now,
                    actor: "cli:test".into(),
                    action: "user_disabled".into(),
                    patient_id: None,
                    detail: serde_json::json!({}),
                },
                audit::seal,
            )
            .await
            .unwrap();
        assert!(matches!(
            authenticate_staff(store.as_ref(), Some(&live), now).await,
            Err(AuthFailure::AccountDisabled)
        ));
    }
}
