//! Settings: the theme, this device (name, server, who enrolled it), a new PIN, the keyboard
//! shortcuts, and signing out with a wipe of the device.
//!
//! Signing out wipes every record, the tokens and the enrolment. The shell refuses it while a
//! note or a record of access waits to be sent (they would be lost), and the screen asks once
//! more before it goes ahead.

use doorstep_ipc::{DeviceInfo, IpcError};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::shortcuts::SHORTCUTS;
use crate::theme::{Theme, ThemeChoice, resolved};
use crate::{Ctx, Load, focus, format};

#[component]
pub fn SettingsScreen() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let info = RwSignal::new(Load::<DeviceInfo>::Loading);
    spawn_local(async move {
        match ctx.backend.device_info().await {
            Ok(i) => info.set(Load::Ready(i)),
            Err(e) => {
                ctx.note_error(&e);
                info.set(Load::Failed(e));
            }
        }
    });
    request_animation_frame(|| focus("#settings-title"));
    view! {
        <section class="screen medium settings" aria-labelledby="settings-title">
            <h1 id="settings-title" tabindex="-1">"Settings"</h1>
            <ThemeSettings />
            <section class="panel" aria-labelledby="device-title">
                <h2 id="device-title">"This device"</h2>
                {move || match info.get() {
                    Load::Loading => view! { <p role="status">"Reading…"</p> }.into_any(),
                    Load::Failed(e) => view! { <p class="field-error">{e.message}</p> }.into_any(),
                    Load::Ready(i) => view! {
                        <dl class="facts" id="device-facts">
                            <div><dt>"Device name"</dt><dd id="device-name">{i.device_name}</dd></div>
                            <div><dt>"Signed in as"</dt><dd>{i.username}</dd></div>
                            <div><dt>"Server"</dt><dd id="device-server">{i.server_url}</dd></div>
                            <div>
                                <dt>"Server certificate"</dt>
                                <dd>
                                    {if i.pinned_ca {
                                        "Pinned: this device trusts only the federation's own authority"
                                    } else {
                                        "Checked against the system's authorities"
                                    }}
                                </dd>
                            </div>
                            <div><dt>"Enrolled"</dt><dd>{format::instant(i.enrolled_at)}</dd></div>
                            <div><dt>"Device id"</dt><dd class="mono">{i.device_id}</dd></div>
                        </dl>
                        <p class="muted">
                            "To use another server, sign out below and enrol again."
                        </p>
                    }
                    .into_any(),
                }}
            </section>
            <ChangePin />
            <section class="panel" aria-labelledby="keys-title">
                <h2 id="keys-title">"Keyboard shortcuts"</h2>
                <table class="keys" id="shortcut-table">
                    <thead>
                        <tr><th scope="col">"Keys"</th><th scope="col">"What they do"</th></tr>
                    </thead>
                    <tbody>
                        {SHORTCUTS
                            .iter()
                            .map(|s| view! {
                                <tr><td><kbd>{s.keys}</kbd></td><td>{s.does}</td></tr>
                            })
                            .collect_view()}
                    </tbody>
                </table>
            </section>
            <SignOut />
        </section>
    }
}

#[component]
fn ThemeSettings() -> impl IntoView {
    let theme = expect_context::<Theme>();
    view! {
        <section class="panel" aria-labelledby="theme-title">
            <h2 id="theme-title">"Appearance"</h2>
            <fieldset class="choices" id="theme-choices">
                <legend>"Theme"</legend>
                {ThemeChoice::ALL
                    .into_iter()
                    .map(|c| {
                        let id = format!("theme-{}", c.key());
                        let for_id = id.clone();
                        let label = move || {
                            if c == ThemeChoice::System {
                                format!("{} (now {})", c.label(), resolved(ThemeChoice::System))
                            } else {
                                c.label().to_owned()
                            }
                        };
                        view! {
                            <label class="choice" for=for_id>
                                <input
                                    type="radio"
                                    name="theme"
                                    id=id
                                    value=c.key()
                                    prop:checked=move || theme.choice.get() == c
                                    on:change=move |_| theme.choose(c)
                                />
                                <span>{label}</span>
                            </label>
                        }
                    })
                    .collect_view()}
            </fieldset>
        </section>
    }
}

#[component]
fn ChangePin() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let old_pin = RwSignal::new(String::new());
    let new_pin = RwSignal::new(String::new());
    let again = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let problem = RwSignal::new(None::<(&'static str, String)>);
    let done = RwSignal::new(false);
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        done.set(false);
        let (old, new, repeat) = (
            old_pin.get_untracked(),
            new_pin.get_untracked(),
            again.get_untracked(),
        );
        let local = if old.is_empty() {
            Some(("#pin-old", "Enter your current PIN.".to_owned()))
        } else if let Some(p) = doorstep_ipc::pin::pin_problem(&new) {
            Some(("#pin-new", p))
        } else if new != repeat {
            Some((
                "#pin-again",
                "The new PIN and its repeat differ.".to_owned(),
            ))
        } else {
            None
        };
        if let Some((field, text)) = local {
            problem.set(Some((field, text)));
            focus(field);
            return;
        }
        problem.set(None);
        busy.set(true);
        spawn_local(async move {
            let answer = ctx.backend.change_pin(&old, &new).await;
            busy.set(false);
            old_pin.set(String::new());
            match answer {
                Ok(()) => {
                    new_pin.set(String::new());
                    again.set(String::new());
                    done.set(true);
                }
                Err(e) => {
                    ctx.note_error(&e);
                    problem.set(Some(("#pin-old", e.message)));
                    focus("#pin-old");
                }
            }
        });
    };
    let invalid = move |field: &'static str| {
        move || problem.with(|p| p.as_ref().is_some_and(|(f, _)| *f == field))
    };
    view! {
        <section class="panel" aria-labelledby="pin-title">
            <h2 id="pin-title">"Change PIN"</h2>
            <form class="form" id="change-pin" on:submit=submit novalidate=true>
                <div class="field" class:invalid=invalid("#pin-old")>
                    <label for="pin-old">"Current PIN"</label>
                    <input id="pin-old" type="password" autocomplete="current-password"
                        prop:value=move || old_pin.get()
                        on:input=move |ev| old_pin.set(event_target_value(&ev))
                        disabled=move || busy.get() />
                </div>
                <div class="field" class:invalid=invalid("#pin-new")>
                    <label for="pin-new">"New PIN"</label>
                    <input id="pin-new" type="password" autocomplete="new-password"
                        aria-describedby="pin-rule"
                        prop:value=move || new_pin.get()
                        on:input=move |ev| new_pin.set(event_target_value(&ev))
                        disabled=move || busy.get() />
                    <p class="hint" id="pin-rule">
                        {format!(
                            "At least {} digits (not 111111, 123456 or 121212), or a passphrase of at least {} characters.",
                            doorstep_ipc::pin::MIN_PIN_DIGITS,
                            doorstep_ipc::pin::MIN_PASSPHRASE_CHARS
                        )}
                    </p>
                </div>
                <div class="field" class:invalid=invalid("#pin-again")>
                    <label for="pin-again">"New PIN again"</label>
                    <input id="pin-again" type="password" autocomplete="new-password"
                        prop:value=move || again.get()
                        on:input=move |ev| again.set(event_target_value(&ev))
                        disabled=move || busy.get() />
                </div>
                <div id="pin-message" aria-live="assertive">
                    {move || problem.get().map(|(_, m)| view! { <p class="field-error">{m}</p> })}
                    {move || done.get().then(|| view! {
                        <p class="composer-ok" id="pin-changed">"PIN changed. Use the new PIN from the next unlock."</p>
                    })}
                </div>
                <div class="actions">
                    <button id="pin-save" class="button primary" type="submit" disabled=move || busy.get()>
                        {move || if busy.get() { "Changing…" } else { "Change PIN" }}
                    </button>
                </div>
            </form>
        </section>
    }
}

#[component]
fn SignOut() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let confirming = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<IpcError>);
    let go = move |_| {
        if !confirming.get_untracked() {
            confirming.set(true);
            error.set(None);
            request_animation_frame(|| focus("#sign-out-confirm"));
            return;
        }
        busy.set(true);
        spawn_local(async move {
            let answer = ctx.backend.sign_out().await;
            busy.set(false);
            match answer {
                Ok(state) => ctx.apply_state(state),
                Err(e) => {
                    ctx.note_error(&e);
                    confirming.set(false);
                    error.set(Some(e));
                }
            }
        });
    };
    view! {
        <section class="panel danger-zone" aria-labelledby="sign-out-title">
            <h2 id="sign-out-title">"Sign out and wipe this device"</h2>
            <p>
                "Removes every record, your sign-in and this device's enrolment. Notes and records \
                 of access still waiting must reach the server first: Doorstep will not wipe them."
            </p>
            <div id="sign-out-message" aria-live="assertive">
                {move || error.get().map(|e| view! { <p class="field-error" id="sign-out-error">{e.message}</p> })}
            </div>
            {move || {
                if confirming.get() {
                    view! {
                        <p class="notice error" role="alert">
                            "Are you sure? The records on this device will be gone until you enrol again."
                        </p>
                        <div class="actions">
                            <button id="sign-out-confirm" class="button danger" type="button" on:click=go
                                disabled=move || busy.get()>
                                {move || if busy.get() { "Wiping…" } else { "Yes, sign out and wipe" }}
                            </button>
                            <button class="button secondary" type="button" on:click=move |_| confirming.set(false)>
                                "Keep my records"
                            </button>
                        </div>
                    }
                    .into_any()
                } else {
                    view! {
                        <div class="actions">
                            <button id="sign-out" class="button danger" type="button" on:click=go>
                                "Sign out and wipe…"
                            </button>
                        </div>
                    }
                    .into_any()
                }
            }}
        </section>
    }
}
