//! Unlock: the PIN opens the encrypted cache on this device. Works with no signal.
//!
//! After too many wrong PINs the shell answers `OnlineSignInRequired`: the screen then asks
//! for the password and the authenticator code as well, and unlocking needs the server
//! (the device keeps its cache and outbox). After a wipe (too many wrong PINs, or the device revoked) it says
//! why and offers enrolment.

use doorstep_ipc::{IpcError, IpcErrorKind};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{Ctx, Screen, focus};

fn unlock_error_text(e: &IpcError) -> String {
    match e.kind {
        // The shell's message carries the attempts left.
        IpcErrorKind::WrongPin
        | IpcErrorKind::OnlineSignInRequired
        | IpcErrorKind::Wiped
        | IpcErrorKind::DeviceRevoked => e.message.clone(),
        IpcErrorKind::SignInFailed | IpcErrorKind::Offline => e.message.clone(),
        _ => format!("Could not unlock: {}", e.message),
    }
}

#[component]
pub fn UnlockScreen(username: String, server_url: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let enrol_url = server_url.clone();
    let sign_in_again = move |_| {
        ctx.screen.set(Screen::Enrol {
            server_url: Some(enrol_url.clone()),
            again: true,
        })
    };
    let pin = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let totp = RwSignal::new(String::new());
    // Set once the shell says an online sign-in is needed; stays for this screen.
    let online = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<IpcError>);
    let missing = RwSignal::new(false);

    request_animation_frame(|| focus("#unlock-pin"));

    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let entered = pin.get_untracked();
        if entered.is_empty() {
            missing.set(true);
            focus("#unlock-pin");
            return;
        }
        missing.set(false);
        busy.set(true);
        error.set(None);
        let with_sign_in = online.get_untracked();
        let (pw, code) = (password.get_untracked(), totp.get_untracked());
        spawn_local(async move {
            let answer = if with_sign_in {
                ctx.backend.unlock_online(&entered, &pw, &code).await
            } else {
                ctx.backend.unlock(&entered).await
            };
            busy.set(false);
            match answer {
                Ok(state) => ctx.apply_state(state),
                Err(e) => {
                    pin.set(String::new());
                    totp.set(String::new());
                    let first = if e.kind == IpcErrorKind::OnlineSignInRequired {
                        online.set(true);
                        if with_sign_in {
                            "#unlock-pin"
                        } else {
                            "#unlock-password"
                        }
                    } else {
                        "#unlock-pin"
                    };
                    error.set(Some(e));
                    request_animation_frame(move || focus(first));
                }
            }
        });
    };

    let invalid = move || missing.get() || error.with(Option::is_some);
    view! {
        <section class="screen narrow" aria-labelledby="unlock-title">
            <h1 id="unlock-title">"Unlock Doorstep"</h1>
            <p class="lead">
                "Enrolled for " <strong>{username}</strong> " at " <span class="mono">{server_url}</span>
                ". Enter your PIN to open your list on this device."
            </p>
            <form class="form" on:submit=submit novalidate=true>
                <div class="field" class:invalid=invalid>
                    <label for="unlock-pin">"PIN or passphrase"</label>
                    <input
                        id="unlock-pin"
                        name="unlock-pin"
                        type="password"
                        autocomplete="current-password"
                        prop:value=move || pin.get()
                        on:input=move |ev| pin.set(event_target_value(&ev))
                        aria-invalid=move || if invalid() { "true" } else { "false" }
                        aria-describedby="unlock-error"
                        disabled=move || busy.get()
                    />
                    <div id="unlock-error" aria-live="assertive">
                        {move || {
                            if missing.get() {
                                Some(view! { <p class="field-error">"Enter your PIN."</p> }.into_any())
                            } else {
                                error
                                    .get()
                                    .map(|e| {
                                        view! {
                                            <p class="field-error" role="alert">
                                                {unlock_error_text(&e)}
                                            </p>
                                        }
                                            .into_any()
                                    })
                            }
                        }}
                    </div>
                </div>
                {move || online.get().then(|| view! {
                    <div class="field">
                        <label for="unlock-password">"Password"</label>
                        <input id="unlock-password" name="unlock-password" type="password"
                            autocomplete="current-password"
                            prop:value=move || password.get()
                            on:input=move |ev| password.set(event_target_value(&ev))
                            disabled=move || busy.get() />
                    </div>
                    <div class="field">
                        <label for="unlock-totp">"Authenticator code"</label>
                        <input id="unlock-totp" name="unlock-totp" type="text" inputmode="numeric"
                            autocomplete="one-time-code"
                            prop:value=move || totp.get()
                            on:input=move |ev| totp.set(event_target_value(&ev))
                            disabled=move || busy.get() />
                    </div>
                })}
                <div class="actions">
                    <button
                        id="unlock-submit"
                        class="button primary"
                        type="submit"
                        disabled=move || busy.get()
                    >
                        {move || match (busy.get(), online.get()) {
                            (true, _) => "Unlocking…",
                            (false, true) => "Sign in and unlock",
                            (false, false) => "Unlock",
                        }}
                    </button>
                    <button
                        id="unlock-sign-in"
                        class="button secondary"
                        type="button"
                        disabled=move || busy.get()
                        on:click=sign_in_again
                    >
                        "Forgotten your PIN? Sign in again"
                    </button>
                    {move || {
                        busy.get()
                            .then(|| {
                                view! {
                                    <p class="progress" role="status">
                                        <span class="spinner" aria-hidden="true"></span>
                                        "Opening the encrypted cache…"
                                    </p>
                                }
                            })
                    }}
                </div>
            </form>
        </section>
    }
}
