//! My list: the patients on this clinician's list, today's first, searchable as you type by
//! name, NHS number, postcode or date of birth. Reads the cache only, so it works offline,
//! up to the agreements' maximum offline age: past it the shell answers `OfflineTooLong`, and
//! the list gives way to [`OfflineTooLong`], which says since when and offers an online
//! sign-in (a sync when there is signal does as well).

use doorstep_ipc::{IpcErrorKind, LIST_FIRST_ROWS, ListRow};
use leptos::ev;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use crate::{Ctx, Load, Screen, SyncView, focus, focus_is_free, format};

/// CSS class of an alert badge, from the badge text the shell sends.
pub fn badge_class(alert: &str) -> &'static str {
    match alert.to_ascii_lowercase().as_str() {
        "dnacpr" => "badge badge-dnacpr",
        "respect" => "badge badge-respect",
        "safeguarding" => "badge badge-safeguarding",
        "allergies" => "badge badge-allergy",
        _ => "badge",
    }
}

/// "14:30 appointment: Leg ulcer dressing" / "Caseload since 3 Mar 2026: Wound care".
fn reason_line(row: &ListRow) -> String {
    let when = match row.list_kind.as_str() {
        "appointment" => format!("{} appointment", format::time_of_day(row.starts_at)),
        "incident" => format!("{} incident", format::time_of_day(row.starts_at)),
        "break_glass" => "Emergency access".to_owned(),
        "caseload" => format!(
            "Caseload since {}",
            format::date(row.starts_at.date_naive())
        ),
        other => format::status(other),
    };
    if row.reason.trim().is_empty() {
        when
    } else {
        format!("{when}: {}", row.reason)
    }
}

/// What a key pressed while a patient row has focus does.
///
/// The rule behind hazard H2 (wrong patient): a record opens from the keyboard only with Enter
/// on a row that visibly has focus. Anything typed while a row has focus (space included, which
/// would otherwise press the row's button) goes to the search box, since a clinician who comes
/// back to the list and starts typing is searching, not choosing. It lands as if the user had
/// tabbed to the box first: Tab selects the box's text, so the first key replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKey {
    /// Open this row's record.
    Open,
    /// Start a new search with this character, focus in the search box.
    Type(char),
    /// Clear the search, focus in the search box.
    Erase,
    /// Not ours (Tab, arrows, Escape, shortcuts): let the browser have it.
    Pass,
}

/// The rule for `key` (a `KeyboardEvent.key`) with the modifier keys held.
pub fn row_key(key: &str, ctrl: bool, alt: bool, meta: bool) -> RowKey {
    if ctrl || alt || meta {
        return RowKey::Pass;
    }
    if key == "Enter" {
        return RowKey::Open;
    }
    if key == "Backspace" {
        return RowKey::Erase;
    }
    // Old WebKit names the space bar "Spacebar".
    if key == "Spacebar" {
        return RowKey::Type(' ');
    }
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_control() => RowKey::Type(c),
        _ => RowKey::Pass,
    }
}

#[component]
fn PatientRow(row: ListRow) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let patient_id = row.patient_id.clone();
    let open = move || {
        ctx.last_opened.set(Some(patient_id.clone()));
        ctx.screen.set(Screen::Record {
            patient_id: patient_id.clone(),
        });
    };
    let open_on_click = open.clone();
    let on_key = move |e: ev::KeyboardEvent| {
        match row_key(&e.key(), e.ctrl_key(), e.alt_key(), e.meta_key()) {
            RowKey::Pass => return,
            RowKey::Open => {
                if !e.repeat() {
                    open();
                }
            }
            RowKey::Type(c) => {
                ctx.search.set(c.to_string());
                focus_search_at_end();
            }
            RowKey::Erase => {
                ctx.search.set(String::new());
                focus_search_at_end();
            }
        }
        // Also stops the button's own activation by Enter or space.
        e.prevent_default();
    };
    // A button is pressed by space on key up: that must not open the record either.
    let on_key_up = |e: ev::KeyboardEvent| {
        if e.key() == " " || e.key() == "Spacebar" {
            e.prevent_default();
        }
    };
    let age = match row.age {
        Some(a) => format!("{a} y"),
        None => "age not recorded".to_owned(),
    };
    let born = row
        .birth_date
        .map(|d| format!("born {}", format::date(d)))
        .unwrap_or_default();
    let reason = reason_line(&row);
    view! {
        <li>
            <button
                type="button"
                class="patient-row"
                class:today=row.today
                data-nhs=row.nhs_number.clone()
                data-patient=row.patient_id.clone()
                on:click=move |_| open_on_click()
                on:keydown=on_key
                on:keyup=on_key_up
            >
                <span class="pr-name">
                    {row.name.clone()}
                    {row.same_name.then(|| view! {
                        <span class="same-name-flag" title="Another patient on your list has the same name: check the date of birth and NHS number">
                            "Same name as another patient"
                        </span>
                    })}
                    {row
                        .alerts
                        .iter()
                        .map(|a| view! { <span class=badge_class(a)>{a.clone()}</span> })
                        .collect_view()}
                </span>
                <span class="pr-age">{age} " " <span class="muted">{born}</span></span>
                <span class="pr-nhs">
                    <span class="muted">"NHS "</span>
                    <span class="mono">{row.nhs_number_display.clone()}</span>
                </span>
                <span class="pr-address">
                    {row.address.clone()}
                    <span class="muted">{format!(" · {}", row.practice_name)}</span>
                </span>
                <span class="pr-reason">{reason}</span>
            </button>
        </li>
    }
}

/// Focus the search box with the caret after its last character.
fn focus_search_at_end() {
    let Some(input) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("search"))
        .and_then(|el| el.dyn_into::<web_sys::HtmlInputElement>().ok())
    else {
        return;
    };
    let _ = input.focus();
    let end = input.value().encode_utf16().count() as u32;
    let _ = input.set_selection_range(end, end);
}

/// The rows of one answer, with the search text they answer.
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    search: String,
    rows: Vec<ListRow>,
    /// How many match in all (more than `rows` when only the first are shown).
    total: u32,
}

/// One group of rows ("Today", "Also on your list"). The rows are keyed by the whole row, so a
/// new answer (typing, a sync) moves, adds and removes elements but never rewrites an element to
/// show another patient: the element that has focus keeps its patient or leaves the page.
#[component]
fn PatientGroup(
    title: Signal<&'static str>,
    id: &'static str,
    rows: Memo<Vec<ListRow>>,
) -> impl IntoView {
    view! {
        <section
            class="list-group"
            aria-labelledby=id
            hidden=move || rows.with(Vec::is_empty)
        >
            <h2 id=id class="list-group-title">
                {move || format!("{} ({})", title.get(), rows.with(Vec::len))}
            </h2>
            <ul class="patient-list">
                <For
                    each=move || rows.get()
                    key=|row: &ListRow| row.clone()
                    children=|row: ListRow| view! { <PatientRow row=row /> }
                />
            </ul>
        </section>
    }
}

/// Past the maximum offline age: no list, the shell's words (since when), and an online
/// sign-in with password and authenticator code that brings the list back.
#[component]
pub fn OfflineTooLong(message: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let password = RwSignal::new(String::new());
    let totp = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let (pw, code) = (password.get_untracked(), totp.get_untracked());
        if pw.is_empty() || code.trim().is_empty() {
            error.set(Some(
                "Enter your password and the code from your authenticator app.".into(),
            ));
            focus("#offline-password");
            return;
        }
        busy.set(true);
        error.set(None);
        spawn_local(async move {
            let answer = ctx.backend.sign_in_online(&pw, &code).await;
            busy.set(false);
            totp.set(String::new());
            match answer {
                Ok(()) => {
                    password.set(String::new());
                    ctx.data_version.update(|v| *v += 1);
                    ctx.refresh_sync();
                }
                Err(e) => {
                    ctx.note_error(&e);
                    error.set(Some(e.message));
                }
            }
        });
    };
    view! {
        <div class="state-box error" role="alert" id="offline-too-long">
            <p class="state-title">"Records are hidden: offline for too long"</p>
            <p id="offline-too-long-message">{message}</p>
            <form class="form" on:submit=submit novalidate=true>
                <div class="field">
                    <label for="offline-password">"Password"</label>
                    <input id="offline-password" name="offline-password" type="password"
                        autocomplete="current-password"
                        prop:value=move || password.get()
                        on:input=move |ev| password.set(event_target_value(&ev))
                        disabled=move || busy.get() />
                </div>
                <div class="field">
                    <label for="offline-totp">"Authenticator code"</label>
                    <input id="offline-totp" name="offline-totp" type="text" inputmode="numeric"
                        autocomplete="one-time-code"
                        prop:value=move || totp.get()
                        on:input=move |ev| totp.set(event_target_value(&ev))
                        disabled=move || busy.get() />
                </div>
                <div id="offline-error" aria-live="assertive">
                    {move || error.get().map(|m| view! { <p class="field-error">{m}</p> })}
                </div>
                <div class="actions">
                    <button id="offline-sign-in" class="button primary" type="submit"
                        disabled=move || busy.get()>
                        {move || if busy.get() { "Signing in…" } else { "Sign in online" }}
                    </button>
                </div>
            </form>
        </div>
    }
}

/// Loading, error, empty and count lines above the groups.
#[component]
fn ListState(rows: RwSignal<Load<Shown>>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let retry = move |_| ctx.data_version.update(|v| *v += 1);
    move || match rows.get() {
        Load::Loading => view! {
            <div class="state-box" role="status">
                <span class="spinner" aria-hidden="true"></span>
                <p class="state-title">"Loading your list…"</p>
            </div>
        }
        .into_any(),
        Load::Failed(e) if e.kind == IpcErrorKind::OfflineTooLong => {
            view! { <OfflineTooLong message=e.message /> }.into_any()
        }
        Load::Failed(e) => view! {
            <div class="state-box error" role="alert">
                <p class="state-title">"Your list could not be read"</p>
                <p>{e.message}</p>
                <button class="button" type="button" on:click=retry>
                    "Try again"
                </button>
            </div>
        }
        .into_any(),
        Load::Ready(Shown { search, rows, .. }) if rows.is_empty() => {
            if search.trim().is_empty() {
                let never_synced = ctx.sync.with_untracked(|s| match s {
                    SyncView::Known(st) => st.last_synced.is_none(),
                    _ => false,
                });
                let hint = if never_synced {
                    "Your list will appear here after the first sync. Use Sync now when you have signal."
                } else {
                    "Patients appear here when they are added to your caseload, an appointment list or an incident, and leave when that ends."
                };
                view! {
                    <div class="state-box" id="list-empty">
                        <p class="state-title">"No patients on your list"</p>
                        <p>{hint}</p>
                    </div>
                }
                .into_any()
            } else {
                view! {
                    <div class="state-box" id="list-empty">
                        <p class="state-title">{format!("No match for “{}”", search.trim())}</p>
                        <p>
                            "Search by name, NHS number, postcode or date of birth (for example 20/11/1941)."
                        </p>
                    </div>
                }
                .into_any()
            }
        }
        Load::Ready(Shown {
            search,
            rows,
            total,
        }) => {
            let mut count = match (search.trim(), total) {
                ("", 1) => "1 patient on your list".to_owned(),
                ("", n) => format!("{n} patients on your list"),
                (q, 1) => format!("1 match for “{q}”"),
                (q, n) => format!("{n} matches for “{q}”"),
            };
            if (rows.len() as u32) < total {
                count.push_str(&format!(
                    ": the first {} are shown. Search to find the others, or show all below.",
                    rows.len()
                ));
            }
            view! { <p class="list-count" id="list-count" aria-live="polite">{count}</p> }
                .into_any()
        }
    }
}

#[component]
pub fn ListScreen() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let rows = RwSignal::new(Load::<Shown>::Loading);
    // Only the first rows of a long list are built, until the clinician asks for all.
    let show_all = RwSignal::new(false);
    // Answers can overtake each other while typing; only the newest request may set the list.
    let latest = StoredValue::new(0u64);
    let first_load = StoredValue::new(true);

    Effect::new(move |_| {
        let search = ctx.search.get();
        let limit = (!show_all.get()).then_some(LIST_FIRST_ROWS);
        ctx.data_version.track();
        let ticket = latest.get_value() + 1;
        latest.set_value(ticket);
        spawn_local(async move {
            let query = search.trim().to_owned();
            let answer = ctx
                .backend
                .list_patients((!query.is_empty()).then_some(query.as_str()), limit)
                .await;
            if latest.get_value() != ticket {
                return;
            }
            match answer {
                Ok(page) => rows.set(Load::Ready(Shown {
                    search,
                    rows: page.rows,
                    total: page.total,
                })),
                Err(e) => {
                    ctx.note_error(&e);
                    rows.set(Load::Failed(e));
                }
            }
            if first_load.get_value() {
                first_load.set_value(false);
                // Give focus back to the row of the record just closed, else to the search box;
                // never take it from where the user has put it meanwhile.
                request_animation_frame(move || {
                    if !focus_is_free() {
                        return;
                    }
                    match ctx.last_opened.get_untracked() {
                        Some(id) => focus(&format!(".patient-row[data-patient=\"{id}\"]")),
                        None => focus("#search"),
                    }
                });
            }
        });
    });

    let group = move |today: bool| {
        Memo::new(move |_| {
            rows.with(|r| match r {
                Load::Ready(shown) => shown
                    .rows
                    .iter()
                    .filter(|row| row.today == today)
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            })
        })
    };
    let today = group(true);
    let later = group(false);
    let others_title = Signal::derive(move || {
        if today.with(Vec::is_empty) {
            "On your list"
        } else {
            "Also on your list"
        }
    });

    view! {
        <section class="screen" aria-labelledby="list-title">
            <div class="list-head">
                <h1 id="list-title">"My list"</h1>
                <div class="search">
                    <label for="search">"Search"</label>
                    <input
                        id="search"
                        type="search"
                        placeholder="Name, NHS number, postcode or date of birth"
                        autocomplete="off"
                        spellcheck="false"
                        prop:value=move || ctx.search.get()
                        on:input=move |ev| {
                            show_all.set(false);
                            ctx.search.set(event_target_value(&ev));
                        }
                        // Only an element that is on the page (the count, or the empty state).
                        aria-describedby=move || {
                            rows.with(|r| match r {
                                Load::Ready(shown) if shown.rows.is_empty() => Some("list-empty"),
                                Load::Ready(_) => Some("list-count"),
                                _ => None,
                            })
                        }
                    />
                </div>
            </div>
            <div class="list-body">
                <ListState rows=rows />
                <PatientGroup title=Signal::stored("Today") id="group-today" rows=today />
                <PatientGroup title=others_title id="group-other" rows=later />
                {move || {
                    rows.with(|r| match r {
                        Load::Ready(shown) if (shown.rows.len() as u32) < shown.total => {
                            let total = shown.total;
                            Some(view! {
                                <p class="list-show-all">
                                    <button
                                        type="button"
                                        class="button secondary"
                                        id="list-show-all"
                                        on:click=move |_| show_all.set(true)
                                    >
                                        {format!("Show all {total}")}
                                    </button>
                                </p>
                            })
                        }
                        _ => None,
                    })
                }}
                // After the rows, so Tab from the search box reaches the patients first.
                <p class="list-break-glass">
                    <button
                        type="button"
                        class="button secondary"
                        id="break-glass"
                        on:click=move |_| ctx.screen.set(Screen::BreakGlass)
                    >
                        "Emergency access: a patient not on my list"
                    </button>
                </p>
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_have_distinct_classes() {
        assert_eq!(badge_class("DNACPR"), "badge badge-dnacpr");
        assert_eq!(badge_class("Safeguarding"), "badge badge-safeguarding");
        assert_eq!(badge_class("ReSPECT"), "badge badge-respect");
        assert_eq!(badge_class("Allergies"), "badge badge-allergy");
        assert_eq!(badge_class("Other"), "badge");
    }

    /// Hazard H2: the keys of "999 454 0157" typed on a focused row search; none opens it.
    #[test]
    fn typing_an_nhs_number_on_a_focused_row_goes_to_the_search_box() {
        let typed: Vec<RowKey> = "999 454 0157"
            .chars()
            .map(|c| row_key(&c.to_string(), false, false, false))
            .collect();
        let expected: Vec<RowKey> = "999 454 0157".chars().map(RowKey::Type).collect();
        assert_eq!(typed, expected);
        assert_eq!(row_key("Spacebar", false, false, false), RowKey::Type(' '));
        assert_eq!(row_key("b", false, false, false), RowKey::Type('b'));
        assert_eq!(row_key("É", false, false, false), RowKey::Type('É'));
        assert_eq!(row_key("Backspace", false, false, false), RowKey::Erase);
    }

    #[test]
    fn only_enter_opens_a_row() {
        assert_eq!(row_key("Enter", false, false, false), RowKey::Open);
        for key in [" ", "9", "a", "Tab", "Escape", "ArrowDown", "Shift", "F5"] {
            assert_ne!(row_key(key, false, false, false), RowKey::Open, "{key:?}");
        }
        // Modified keys are shortcuts, not typing and not opening.
        assert_eq!(row_key("Enter", true, false, false), RowKey::Pass);
        assert_eq!(row_key("a", true, false, false), RowKey::Pass);
        assert_eq!(row_key("c", false, false, true), RowKey::Pass);
        assert_eq!(row_key("Tab", false, false, false), RowKey::Pass);
        assert_eq!(row_key("Escape", false, false, false), RowKey::Pass);
        assert_eq!(row_key("Dead", false, false, false), RowKey::Pass);
    }
}
