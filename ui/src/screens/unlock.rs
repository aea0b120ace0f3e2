//! Unlock: the PIN opens the encrypted cache on this device. Works with no signal.

use doorstep_ipc::{IpcError, IpcErrorKind};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{Ctx, Screen, focus};

fn unlock_error_text(e: &IpcError) -> String {
    match e.kind {
        // The shell's message carries the attempts left.
        IpcErrorKind::WrongPin => e.message.clone(),
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
        spawn_local(async move {
            let answer = ctx.backend.unlock(&entered).await;
            busy.set(false);
            match answer {
                Ok(state) => ctx.apply_state(state),
                Err(e) => {
                    pin.set(String::new());
                    error.set(Some(e));
                    request_animation_frame(|| focus("#unlock-pin"));
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
                <div class="actions">
                    <button
                        id="unlock-submit"
                        class="button primary"
                        type="submit"
                        disabled=move || busy.get()
                    >
                        {move || if busy.get() { "Unlocking…" } else { "Unlock" }}
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
