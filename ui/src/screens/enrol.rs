//! Enrol this device: federation server, username, password, TOTP code, and the PIN that will
//! unlock the cache on this device.

use doorstep_ipc::{AppState, EnrolForm, IpcError, IpcErrorKind};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{Ctx, focus};

/// One message per field that needs fixing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors {
    pub server_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub totp: Option<String>,
    pub pin: Option<String>,
    pub pin_confirm: Option<String>,
}

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.first_invalid().is_none()
    }

    /// The id of the first field to fix, in form order.
    pub fn first_invalid(&self) -> Option<&'static str> {
        [
            (&self.server_url, "enrol-server"),
            (&self.username, "enrol-user"),
            (&self.password, "enrol-password"),
            (&self.totp, "enrol-totp"),
            (&self.pin, "enrol-pin"),
            (&self.pin_confirm, "enrol-pin-confirm"),
        ]
        .into_iter()
        .find(|(e, _)| e.is_some())
        .map(|(_, id)| id)
    }
}

fn is_https(url: &str) -> bool {
    url.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty())
}

fn is_loopback_http(url: &str) -> bool {
    ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        })
}

/// Checks the form before anything is sent. The server does its own checks; these catch
/// what can be caught on the device, with a message a clinician can act on.
pub fn validate_enrol(form: &EnrolForm, pin_confirm: &str) -> FieldErrors {
    let mut errors = FieldErrors::default();
    let url = form.server_url.trim();
    if url.is_empty() {
        errors.server_url = Some("Enter the address of your federation server.".into());
    } else if !(is_https(url) || is_loopback_http(url)) {
        errors.server_url = Some(
            "The server address must start with https:// (for example https://care.example.nhs.uk)."
                .into(),
        );
    }
    if form.username.trim().is_empty() {
        errors.username = Some("Enter your username.".into());
    }
    if form.password.is_empty() {
        errors.password = Some("Enter your password.".into());
    }
    let totp: String = form
        .totp
        .expose()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if totp.is_empty() {
        errors.totp = Some("Enter the 6-digit code from your authenticator app.".into());
    } else if totp.len() != 6 || !totp.chars().all(|c| c.is_ascii_digit()) {
        errors.totp = Some("The code is 6 digits, from your authenticator app.".into());
    }
    let pin = form.pin.expose();
    // The one PIN rule, shared with the device library and the command line.
    errors.pin = doorstep_ipc::pin::pin_problem(pin);
    if errors.pin.is_none() {
        if pin_confirm.is_empty() {
            errors.pin_confirm = Some("Enter the same PIN again.".into());
        } else if pin_confirm != pin {
            errors.pin_confirm = Some("The two PINs do not match.".into());
        }
    }
    errors
}

fn server_error_text(e: &IpcError) -> String {
    match e.kind {
        IpcErrorKind::SignInFailed => format!("Sign-in failed: {}", e.message),
        IpcErrorKind::Offline => format!("Cannot reach the server: {}", e.message),
        _ => e.message.clone(),
    }
}

#[component]
fn Field(
    id: &'static str,
    /// Spans both columns of the form.
    #[prop(optional)]
    full: bool,
    label: &'static str,
    #[prop(optional)] hint: Option<&'static str>,
    kind: &'static str,
    autocomplete: &'static str,
    #[prop(optional)] inputmode: Option<&'static str>,
    value: RwSignal<String>,
    error: Signal<Option<String>>,
    disabled: Signal<bool>,
) -> impl IntoView {
    let error_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described_by = {
        let error_id = error_id.clone();
        let hint_id = hint_id.clone();
        move || {
            let mut ids = Vec::new();
            if hint.is_some() {
                ids.push(hint_id.clone());
            }
            if error.with(Option::is_some) {
                ids.push(error_id.clone());
            }
            ids.join(" ")
        }
    };
    view! {
        <div class="field" class:full=full class:invalid=move || error.with(Option::is_some)>
            <label for=id>{label}</label>
            {hint.map(|h| view! { <p class="hint" id=hint_id.clone()>{h}</p> })}
            <input
                id=id
                name=id
                type=kind
                autocomplete=autocomplete
                inputmode=inputmode
                spellcheck="false"
                autocapitalize="off"
                prop:value=move || value.get()
                on:input=move |ev| value.set(event_target_value(&ev))
                aria-invalid=move || if error.with(Option::is_some) { "true" } else { "false" }
                aria-describedby=described_by
                disabled=move || disabled.get()
            />
            {move || {
                error
                    .get()
                    .map(|e| view! { <p class="field-error" id=error_id.clone()>{e}</p> })
            }}
        </div>
    }
}

#[component]
pub fn EnrolScreen(server_url: Option<String>, again: bool) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let prefilled = server_url.is_some();
    let server = RwSignal::new(server_url.unwrap_or_default());
    let user = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let totp = RwSignal::new(String::new());
    let pin = RwSignal::new(String::new());
    let pin_confirm = RwSignal::new(String::new());
    let errors = RwSignal::new(FieldErrors::default());
    let busy = RwSignal::new(false);
    let server_error = RwSignal::new(None::<IpcError>);

    // Start where there is something to type.
    request_animation_frame(move || {
        focus(if prefilled {
            "#enrol-user"
        } else {
            "#enrol-server"
        })
    });

    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let form = EnrolForm {
            server_url: server
                .get_untracked()
                .trim()
                .trim_end_matches('/')
                .to_owned(),
            username: user.get_untracked().trim().to_owned(),
            password: password.get_untracked().into(),
            totp: totp
                .get_untracked()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .into(),
            pin: pin.get_untracked().into(),
        };
        let found = validate_enrol(&form, &pin_confirm.get_untracked());
        let first = found.first_invalid();
        errors.set(found);
        if let Some(id) = first {
            focus(&format!("#{id}"));
            return;
        }
        busy.set(true);
        server_error.set(None);
        spawn_local(async move {
            match ctx.backend.enrol(&form).await {
                Ok(state @ AppState::Unlocked { .. }) => ctx.apply_state(state),
                Ok(state) => {
                    busy.set(false);
                    ctx.apply_state(state);
                }
                Err(e) => {
                    busy.set(false);
                    // A one-time code is used up or stale after a failed attempt.
                    totp.set(String::new());
                    server_error.set(Some(e));
                    request_animation_frame(|| focus("#enrol-error"));
                }
            }
        });
    };

    let disabled = Signal::derive(move || busy.get());
    let err = move |f: fn(&FieldErrors) -> &Option<String>| {
        Signal::derive(move || errors.with(|e| f(e).clone()))
    };

    view! {
        <section class="screen medium" aria-labelledby="enrol-title">
            <h1 id="enrol-title">
                {if again { "Sign in again on this device" } else { "Enrol this device" }}
            </h1>
            <p class="lead">
                {if again {
                    "Sign in with your password and authenticator code to choose a new PIN. The copy of your list on this device is replaced by a fresh one from the server."
                } else {
                    "Sign in once to link this device to your federation account. Your list is then kept here, encrypted, and opens with your PIN, with or without signal."
                }}
            </p>
            {move || {
                server_error
                    .get()
                    .map(|e| {
                        view! {
                            <div id="enrol-error" class="notice error" role="alert" tabindex="-1">
                                {server_error_text(&e)}
                            </div>
                        }
                    })
            }}
            <form class="form two-columns" on:submit=submit novalidate=true>
                <Field
                    id="enrol-server"
                    full=true
                    label="Federation server"
                    hint="The address your IT team gave you, starting with https://"
                    kind="url"
                    autocomplete="url"
                    value=server
                    error=err(|e| &e.server_url)
                    disabled=disabled
                />
                <Field
                    id="enrol-user"
                    label="Username"
                    kind="text"
                    autocomplete="username"
                    value=user
                    error=err(|e| &e.username)
                    disabled=disabled
                />
                <Field
                    id="enrol-password"
                    label="Password"
                    kind="password"
                    autocomplete="current-password"
                    value=password
                    error=err(|e| &e.password)
                    disabled=disabled
                />
                <Field
                    id="enrol-totp"
                    label="Authenticator code (6 digits)"
                    kind="text"
                    autocomplete="one-time-code"
                    inputmode="numeric"
                    value=totp
                    error=err(|e| &e.totp)
                    disabled=disabled
                />
                <p class="hint full" id="enrol-pin-rules">
                    "Choose a PIN for this device: at least 6 digits (not repeated or consecutive), or a passphrase. You will type it each time you open Doorstep."
                </p>
                <Field
                    id="enrol-pin"
                    label="New PIN"
                    kind="password"
                    autocomplete="new-password"
                    value=pin
                    error=err(|e| &e.pin)
                    disabled=disabled
                />
                <Field
                    id="enrol-pin-confirm"
                    label="The same PIN again"
                    kind="password"
                    autocomplete="new-password"
                    value=pin_confirm
                    error=err(|e| &e.pin_confirm)
                    disabled=disabled
                />
                <div class="actions full">
                    <button id="enrol-submit" class="button primary" type="submit" disabled=disabled>
                        {move || if busy.get() { "Enrolling…" } else { "Enrol device" }}
                    </button>
                    {again
                        .then(|| {
                            view! {
                                <button
                                    id="enrol-cancel"
                                    class="button secondary"
                                    type="button"
                                    disabled=disabled
                                    on:click=move |_| ctx.refresh_state()
                                >
                                    "Back to unlock"
                                </button>
                            }
                        })}
                    {move || {
                        busy.get()
                            .then(|| {
                                view! {
                                    <p class="progress" role="status">
                                        <span class="spinner" aria-hidden="true"></span>
                                        "Signing in to the server and protecting the cache with your PIN…"
                                    </p>
                                }
                            })
                    }}
                </div>
            </form>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> EnrolForm {
        EnrolForm {
            server_url: "https://care.example.nhs.uk".into(),
            username: "nurse.ahmed".into(),
            password: "correct horse".into(),
            totp: "123456".into(),
            pin: "4071 92836".into(),
        }
    }

    #[test]
    fn a_complete_form_passes() {
        let f = form();
        assert!(validate_enrol(&f, f.pin.expose()).is_empty());
    }

    #[test]
    fn each_field_reports_its_own_problem() {
        let mut f = form();
        f.server_url = "ftp://x".into();
        f.username = "  ".into();
        f.password = Default::default();
        f.totp = "12a456".into();
        let e = validate_enrol(&f, "4071 92836");
        assert!(e.server_url.is_some());
        assert!(e.username.is_some());
        assert!(e.password.is_some());
        assert!(e.totp.is_some());
        assert!(e.pin.is_none());
        assert!(e.pin_confirm.is_none());
        assert_eq!(e.first_invalid(), Some("enrol-server"));
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let mut f = form();
        f.server_url = "http://127.0.0.1:8443".into();
        assert!(validate_enrol(&f, f.pin.expose()).server_url.is_none());
        f.server_url = "http://localhost.evil.example".into();
        assert!(validate_enrol(&f, f.pin.expose()).server_url.is_some());
        f.server_url = "http://care.example.nhs.uk".into();
        assert!(validate_enrol(&f, f.pin.expose()).server_url.is_some());
    }

    #[test]
    fn weak_or_mismatched_pins_are_refused() {
        let mut f = form();
        for weak in ["12345", "111111", "123456", "987654"] {
            f.pin = weak.into();
            let e = validate_enrol(&f, weak);
            assert!(e.pin.is_some(), "{weak} accepted");
        }
        f.pin = "583920".into();
        assert!(validate_enrol(&f, "583920").is_empty());
        let e = validate_enrol(&f, "583921");
        assert_eq!(e.pin_confirm.as_deref(), Some("The two PINs do not match."));
        assert_eq!(e.first_invalid(), Some("enrol-pin-confirm"));
    }
}
