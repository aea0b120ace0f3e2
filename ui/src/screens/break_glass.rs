//! Emergency access (break-glass): reach a patient who is not on the list, in the open.
//!
//! The reason comes first: until one is chosen the search cannot be sent, and nothing of
//! any patient is shown. The search is exact (an NHS number, or a family name with a date of
//! birth); the matches show only what tells patients apart (name, date of birth, NHS number,
//! practice). Choosing one says plainly that the access is recorded and the privacy officer
//! alerted, and opens the record once it has synced down, marked as emergency access.

use doorstep_ipc::{BreakGlassForm, BreakGlassMatch};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{Ctx, Screen, focus, format};

/// The reasons, as the server names them and as the clinician reads them.
pub const REASONS: &[(&str, &str)] = &[
    ("emergency_treatment", "Emergency treatment"),
    ("patient_unconscious", "Patient unconscious"),
    ("patient_consented", "Patient consented"),
    ("other", "Other (say why)"),
];

#[derive(Debug, Clone, PartialEq)]
enum Found {
    Nothing,
    Searching,
    Matches(Vec<BreakGlassMatch>),
    Failed(String),
}

#[component]
pub fn BreakGlassScreen() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let reason = RwSignal::new(String::new());
    let reason_text = RwSignal::new(String::new());
    let nhs = RwSignal::new(String::new());
    let family = RwSignal::new(String::new());
    let born = RwSignal::new(String::new());
    let found = RwSignal::new(Found::Nothing);
    let granting = RwSignal::new(false);
    request_animation_frame(|| focus("#bg-reason"));

    let no_reason = move || reason.with(String::is_empty);
    let form = move || {
        let text = |s: RwSignal<String>| Some(s.get_untracked()).filter(|t| !t.trim().is_empty());
        BreakGlassForm {
            nhs_number: text(nhs),
            family: text(family),
            birth_date: text(born),
            reason: reason.get_untracked(),
            reason_text: text(reason_text),
        }
    };
    let search = move |e: leptos::ev::SubmitEvent| {
        e.prevent_default();
        if no_reason() {
            found.set(Found::Failed(
                "Choose the reason for emergency access first.".into(),
            ));
            return;
        }
        found.set(Found::Searching);
        let form = form();
        spawn_local(async move {
            match ctx.backend.break_glass_search(&form).await {
                Ok(m) => found.set(Found::Matches(m)),
                Err(e) => {
                    ctx.note_error(&e);
                    found.set(Found::Failed(e.message));
                }
            }
        });
    };
    let grant = move |patient_id: String| {
        granting.set(true);
        let (why, words) = (reason.get_untracked(), reason_text.get_untracked());
        spawn_local(async move {
            let words = Some(words).filter(|w| !w.trim().is_empty());
            match ctx
                .backend
                .break_glass(&patient_id, &why, words.as_deref())
                .await
            {
                Ok(granted) => {
                    ctx.data_version.update(|v| *v += 1);
                    ctx.last_opened.set(Some(granted.patient_id.clone()));
                    ctx.screen.set(Screen::Record {
                        patient_id: granted.patient_id,
                    });
                }
                Err(e) => {
                    granting.set(false);
                    ctx.note_error(&e);
                    found.set(Found::Failed(e.message));
                }
            }
        });
    };

    view! {
        <section class="screen break-glass" aria-labelledby="bg-title">
            <div class="bg-head">
                <button
                    type="button"
                    class="button secondary"
                    id="bg-back"
                    on:click=move |_| ctx.screen.set(Screen::List)
                >
                    "← Back to my list"
                </button>
                <h1 id="bg-title">"Emergency access to a patient not on your list"</h1>
            </div>
            <p class="bg-warning" role="note">
                "Use this only when you must see the record of a patient who is not on your list. "
                "Every search and every record opened is recorded, and your service's privacy "
                "officer is alerted. The access ends after 24 hours."
            </p>
            <form id="bg-form" class="bg-form" on:submit=search novalidate>
                <div class="field">
                    <label for="bg-reason">"Reason (required first)"</label>
                    <select
                        id="bg-reason"
                        prop:value=move || reason.get()
                        on:change=move |e| reason.set(event_target_value(&e))
                    >
                        <option value="">"Choose a reason…"</option>
                        {REASONS
                            .iter()
                            .map(|(code, label)| view! { <option value=*code>{*label}</option> })
                            .collect_view()}
                    </select>
                </div>
                <div class="field">
                    <label for="bg-reason-text">"In your words (required for Other)"</label>
                    <input
                        id="bg-reason-text"
                        type="text"
                        maxlength="500"
                        prop:value=move || reason_text.get()
                        on:input=move |e| reason_text.set(event_target_value(&e))
                    />
                </div>
                <fieldset class="bg-find" disabled=no_reason>
                    <legend>"Find the patient (exact match)"</legend>
                    <div class="field">
                        <label for="bg-nhs">"NHS number"</label>
                        <input
                            id="bg-nhs"
                            type="text"
                            inputmode="numeric"
                            autocomplete="off"
                            prop:value=move || nhs.get()
                            on:input=move |e| nhs.set(event_target_value(&e))
                        />
                    </div>
                    <p class="muted">"or"</p>
                    <div class="field">
                        <label for="bg-family">"Family name"</label>
                        <input
                            id="bg-family"
                            type="text"
                            autocomplete="off"
                            prop:value=move || family.get()
                            on:input=move |e| family.set(event_target_value(&e))
                        />
                    </div>
                    <div class="field">
                        <label for="bg-born">"Date of birth (DD/MM/YYYY)"</label>
                        <input
                            id="bg-born"
                            type="text"
                            autocomplete="off"
                            prop:value=move || born.get()
                            on:input=move |e| born.set(event_target_value(&e))
                        />
                    </div>
                    <button class="button" type="submit" id="bg-search">
                        "Search"
                    </button>
                </fieldset>
            </form>
            <div id="bg-results" aria-live="polite">
                {move || match found.get() {
                    Found::Nothing => ().into_any(),
                    Found::Searching => view! { <p role="status">"Searching…"</p> }.into_any(),
                    Found::Failed(m) => view! {
                        <p class="form-error" role="alert" id="bg-error">{m}</p>
                    }
                    .into_any(),
                    Found::Matches(m) if m.is_empty() => view! {
                        <p id="bg-none">
                            "No patient matches exactly within your service's emergency access."
                        </p>
                    }
                    .into_any(),
                    Found::Matches(m) => view! {
                        <ul class="bg-matches">
                            {m
                                .into_iter()
                                .map(|p| {
                                    let id = p.patient_id.clone();
                                    let born = p
                                        .birth_date
                                        .map(format::date)
                                        .unwrap_or_else(|| "date of birth not recorded".into());
                                    view! {
                                        <li class="bg-match" data-patient=p.patient_id.clone()>
                                            <span class="bg-name">{p.name.clone()}</span>
                                            <span>{format!("born {born}")}</span>
                                            <span>
                                                "NHS " <span class="mono">{p.nhs_number_display.clone()}</span>
                                            </span>
                                            <span class="muted">{p.practice_name.clone()}</span>
                                            <button
                                                type="button"
                                                class="button danger bg-open"
                                                disabled=move || granting.get()
                                                on:click=move |_| grant(id.clone())
                                            >
                                                "Open with emergency access"
                                            </button>
                                        </li>
                                    }
                                })
                                .collect_view()}
                        </ul>
                    }
                    .into_any(),
                }}
            </div>
        </section>
    }
}
