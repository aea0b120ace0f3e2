//! Users and devices as the federation's administrators manage them: add a user, disable or
//! enable one, unlock one, reset one's TOTP secret; list devices, revoke one. The command
//! line (`doorstep-server user ...`, `device ...`) and the admin API call these.
//!
//! # Rules
//!
//! - Every change names who and why ([`Change`], the reason required) and is written with
//!   its audit event in one transaction ([`crate::store::AdminStore`]).
//! - A new user gets a random password and TOTP secret, answered once ([`Issued`]) and never
//!   stored in the clear (Argon2id hash; the secret sealed, [`crate::totp_key`]). A reset
//!   TOTP secret is answered once the same way.
//! - A disabled user cannot sign in, refresh or use a token ([`crate::auth`] checks the flag
//!   at each); enabling gives the devices back. A revoked device loses its tokens at once and
//!   is answered 403 `device_revoked` from then on; revoking is final.
//! - Bad input changes nothing and names the field ([`AdminFailure::Invalid`]).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::admin::{AdminFailure, Change, check_reason, check_role, invalid};
use crate::audit;
use crate::auth;
use crate::limits::MAX_USERNAME_CHARS;
use crate::store::{AccountWrite, AuditEvent, NewUser, Store, StoreError, UserRow};
use crate::totp_key::TotpKey;

/// A user to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub service_id: String,
    /// The member practice a receptionist works at.
    pub practice_ods: Option<String>,
}

/// What a new user signs in with, shown once.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Issued {
    pub username: String,
    pub password: String,
    /// Base32, for the user's authenticator.
    pub totp_secret: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A device as an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceListing {
    pub id: String,
    pub user: String,
    pub name: String,
    pub enrolled_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn event(
    change: &Change,
    action: &str,
    detail: serde_json::Value,
    now: DateTime<Utc>,
) -> AuditEvent {
    let mut detail = detail;
    detail["reason"] = change.reason.clone().into();
    AuditEvent {
        at: now,
        actor: change.actor.clone(),
        action: action.into(),
        patient_id: None,
        detail,
    }
}

async fn user(store: &dyn Store, username: &str) -> Result<UserRow, AdminFailure> {
    store
        .user_by_username(username)
        .await?
        .ok_or_else(|| AdminFailure::NotFound(format!("no user {username}")))
}

/// Add a user with a random password and TOTP secret (answered once).
pub async fn add_user(
    store: &dyn Store,
    totp_key: &TotpKey,
    account: NewAccount,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<Issued, AdminFailure> {
    check_reason(change)?;
    let username = account.username.trim().to_string();
    if username.is_empty()
        || username.chars().count() > MAX_USERNAME_CHARS
        || !username
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err(invalid(
            "username",
            format!(
                "{username:?} is not a username (1 to {MAX_USERNAME_CHARS} lowercase letters, \
                 digits, '.', '-', '_')"
            ),
        ));
    }
    let display_name = account.display_name.trim().to_string();
    if display_name.is_empty() || display_name.chars().count() > 100 {
        return Err(invalid("display_name", "must be 1 to 100 characters"));
    }
    let role = check_role(&account.role)?;
    let services = store.services().await?;
    if !services.iter().any(|s| s.id == account.service_id) {
        return Err(invalid(
            "service",
            format!(
                "no service {:?} (there are: {})",
                account.service_id,
                services
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let practice = account
        .practice_ods
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_uppercase);
    match (&practice, role == "receptionist") {
        (None, true) => {
            return Err(invalid(
                "practice",
                "a receptionist is a user of a practice: give its ODS code",
            ));
        }
        (Some(_), false) => {
            return Err(invalid(
                "practice",
                format!("only a receptionist is a user of a practice (the role is {role})"),
            ));
        }
        (Some(ods), true) => {
            if !store.practices().await?.iter().any(|p| p.ods == *ods) {
                return Err(invalid(
                    "practice",
                    format!("{ods} is not a member practice"),
                ));
            }
        }
        (None, false) => {}
    }
    let password = auth::random_password();
    let totp_secret = auth::new_totp_secret();
    let hash = {
        let password = password.clone();
        let failed = |e: String| StoreError::Backend(format!("hashing the password: {e}"));
        tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?
    };
    let detail = serde_json::json!({
        "user": username,
        "role": role,
        "service": account.service_id,
        "practice": practice,
    });
    store
        .write_new_user(
            NewUser {
                username: username.clone(),
                display_name,
                role: role.to_string(),
                service_id: account.service_id.clone(),
                password_hash: hash,
                totp_secret: totp_key.seal(&username, &totp_secret),
                practice_ods: practice,
            },
            now,
            event(change, "user_added", detail, now),
            audit::seal,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => AdminFailure::Conflict(m),
            e => e.into(),
        })?;
    tracing::info!(actor = %change.actor, user = %username, "user added");
    Ok(Issued {
        username,
        password,
        totp_secret,
    })
}

/// Disable (`true`) or enable a user.
pub async fn set_disabled(
    store: &dyn Store,
    username: &str,
    disabled: bool,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<(), AdminFailure> {
    check_reason(change)?;
    let user = user(store, username).await?;
    let (word, action) = if disabled {
        ("disabled", "user_disabled")
    } else {
        ("enabled", "user_enabled")
    };
    if user.disabled == disabled {
        return Err(AdminFailure::Conflict(format!(
            "{username} is already {word}"
        )));
    }
    store
        .write_account(
            &user.id,
            AccountWrite::Disabled(disabled),
            event(change, action, serde_json::json!({ "user": username }), now),
            audit::seal,
        )
        .await?;
    tracing::info!(actor = %change.actor, user = %username, "user {word}");
    Ok(())
}

/// Clear a user's failed sign-ins and lock.
pub async fn unlock(
    store: &dyn Store,
    username: &str,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<(), AdminFailure> {
    check_reason(change)?;
    let user = user(store, username).await?;
    store
        .write_account(
            &user.id,
            AccountWrite::Unlock,
            event(
                change,
                "user_unlocked",
                serde_json::json!({
                    "user": username,
                    "failed_attempts": user.failed_attempts,
                    "was_locked_until": user.locked_until,
                }),
                now,
            ),
            audit::seal,
        )
        .await?;
    tracing::info!(actor = %change.actor, user = %username, "user unlocked");
    Ok(())
}

/// Give a user a new TOTP secret (answered once, base32); the old one stops working.
pub async fn reset_totp(
    store: &dyn Store,
    totp_key: &TotpKey,
    username: &str,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<String, AdminFailure> {
    check_reason(change)?;
    let user = user(store, username).await?;
    let secret = auth::new_totp_secret();
    store
        .write_account(
            &user.id,
            AccountWrite::TotpSecret(totp_key.seal(&user.username, &secret)),
            event(
                change,
                "user_totp_reset",
                serde_json::json!({ "user": username }),
                now,
            ),
            audit::seal,
        )
        .await?;
    tracing::info!(actor = %change.actor, user = %username, "TOTP secret reset");
    Ok(secret)
}

/// Every device with its user's name, oldest first.
pub async fn devices(store: &dyn Store) -> Result<Vec<DeviceListing>, AdminFailure> {
    let users: std::collections::HashMap<String, String> = store
        .users()
        .await?
        .into_iter()
        .map(|u| (u.id, u.username))
        .collect();
    Ok(store
        .devices()
        .await?
        .into_iter()
        .map(|d| DeviceListing {
            user: users.get(&d.user_id).cloned().unwrap_or_default(),
            id: d.id,
            name: d.name,
            enrolled_at: d.created_at,
            revoked_at: d.revoked_at,
        })
        .collect())
}

// ---------- a service manager's own service ----------

/// The role of a service's manager (as `crate::bookings` names it).
const SERVICE_MANAGER: &str = "service_manager";

/// Roles a service manager may not give: the federation's own (a privacy officer answers to
/// the federation, not to one service).
pub const ROLES_NOT_FOR_MANAGERS: &[&str] = &[auth::PRIVACY_OFFICER];

fn manager_change(manager: &UserRow, reason: &str) -> Result<Change, AdminFailure> {
    if manager.role != SERVICE_MANAGER {
        return Err(invalid(
            "role",
            format!(
                "users and devices of a service are managed by its service manager; {} is a {}",
                manager.username, manager.role
            ),
        ));
    }
    Ok(Change {
        actor: format!("user:{}", manager.username),
        reason: reason.to_string(),
    })
}

/// The users of the manager's own service, by username.
pub async fn service_users(
    store: &dyn Store,
    manager: &UserRow,
) -> Result<Vec<UserRow>, AdminFailure> {
    manager_change(manager, "")?;
    let mut users: Vec<UserRow> = store
        .users()
        .await?
        .into_iter()
        .filter(|u| u.service_id == manager.service_id)
        .collect();
    users.sort_by(|a, b| a.username.cmp(&b.username));
    Ok(users)
}

/// The devices of the users of the manager's own service, oldest first.
pub async fn service_devices(
    store: &dyn Store,
    manager: &UserRow,
) -> Result<Vec<DeviceListing>, AdminFailure> {
    let names: Vec<String> = service_users(store, manager)
        .await?
        .into_iter()
        .map(|u| u.username)
        .collect();
    Ok(devices(store)
        .await?
        .into_iter()
        .filter(|d| names.contains(&d.user))
        .collect())
}

/// A service manager adds a user to their own service (any role but
/// [`ROLES_NOT_FOR_MANAGERS`]), audited with the manager as actor.
pub async fn add_service_user(
    store: &dyn Store,
    totp_key: &TotpKey,
    manager: &UserRow,
    account: NewAccount,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Issued, AdminFailure> {
    let change = manager_change(manager, reason)?;
    if ROLES_NOT_FOR_MANAGERS.contains(&account.role.trim()) {
        return Err(invalid(
            "role",
            format!(
                "a {} is added by the federation's administrator, not a service manager",
                account.role.trim()
            ),
        ));
    }
    add_user(
        store,
        totp_key,
        NewAccount {
            service_id: manager.service_id.clone(),
            ..account
        },
        &change,
        now,
    )
    .await
}

/// A service manager disables (`true`) or enables a user of their own service; not
/// themselves.
pub async fn set_service_user_disabled(
    store: &dyn Store,
    manager: &UserRow,
    username: &str,
    disabled: bool,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), AdminFailure> {
    let change = manager_change(manager, reason)?;
    let target = user(store, username.trim()).await?;
    if target.service_id != manager.service_id {
        return Err(AdminFailure::NotFound(format!(
            "no user {} in service {}",
            username.trim(),
            manager.service_id
        )));
    }
    if target.id == manager.id {
        return Err(invalid(
            "username",
            "you cannot disable your own account: ask the administrator",
        ));
    }
    set_disabled(store, &target.username, disabled, &change, now).await
}

/// A service manager revokes a device of a user of their own service (a lost tablet).
pub async fn revoke_service_device(
    store: &dyn Store,
    manager: &UserRow,
    device_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), AdminFailure> {
    let change = manager_change(manager, reason)?;
    let device_id = device_id.trim();
    let ours = service_devices(store, manager)
        .await?
        .iter()
        .any(|d| d.id == device_id);
    if !ours {
        return Err(AdminFailure::NotFound(format!(
            "no device {device_id} of a user of service {}",
            manager.service_id
        )));
    }
    revoke_device(store, device_id, &change, now).await
}

/// Revoke a device: its tokens stop working at once, and it is told `device_revoked`.
pub async fn revoke_device(
    store: &dyn Store,
    device_id: &str,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<(), AdminFailure> {
    check_reason(change)?;
    let device = store
        .device(device_id)
        .await?
        .ok_or_else(|| AdminFailure::NotFound(format!("no device {device_id}")))?;
    if device.revoked_at.is_some() {
        return Err(AdminFailure::Conflict(format!(
            "device {device_id} is already revoked"
        )));
    }
    let username = store
        .user_by_id(&device.user_id)
        .await?
        .map(|u| u.username)
        .unwrap_or_default();
    store
        .write_device_revoked(
            device_id,
            now,
            event(
                change,
                "device_revoked",
                serde_json::json!({ "device_id": device_id, "user": username, "name": device.name }),
                now,
            ),
            audit::seal,
        )
        .await?;
    tracing::info!(actor = %change.actor, %device_id, "device revoked");
    Ok(())
}
