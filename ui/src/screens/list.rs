//! My list: the patients on this clinician's list, today's first, searchable as you type by
//! name, NHS number, postcode or date of birth. Reads the cache only, so it works offline.

use doorstep_ipc::ListRow;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{Ctx, Load, Screen, SyncView, focus, format};

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

#[component]
fn PatientRow(row: ListRow) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let patient_id = row.patient_id.clone();
    let open = move |_| {
        ctx.last_opened.set(Some(patient_id.clone()));
        ctx.screen.set(Screen::Record {
            patient_id: patient_id.clone(),
        });
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
    let label = format!("Open the record of {}", row.name);
    view! {
        <li>
            <button
                type="button"
                class="patient-row"
                class:today=row.today
                data-nhs=row.nhs_number.clone()
                data-patient=row.patient_id.clone()
                aria-label=label
                on:click=open
            >
                <span class="pr-name">
                    {row.name.clone()}
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

#[component]
fn Rows(rows: Vec<ListRow>, search: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    if rows.is_empty() {
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
            return view! {
                <div class="state-box" id="list-empty">
                    <p class="state-title">"No patients on your list"</p>
                    <p>{hint}</p>
                </div>
            }
            .into_any();
        }
        return view! {
            <div class="state-box" id="list-empty">
                <p class="state-title">{format!("No match for “{}”", search.trim())}</p>
                <p>"Search by name, NHS number, postcode or date of birth (for example 20/11/1941)."</p>
            </div>
        }
        .into_any();
    }
    let count = if search.trim().is_empty() {
        match rows.len() {
            1 => "1 patient on your list".to_owned(),
            n => format!("{n} patients on your list"),
        }
    } else {
        match rows.len() {
            1 => format!("1 match for “{}”", search.trim()),
            n => format!("{n} matches for “{}”", search.trim()),
        }
    };
    let (today, later): (Vec<ListRow>, Vec<ListRow>) = rows.into_iter().partition(|r| r.today);
    let group = |title: &'static str, id: &'static str, rows: Vec<ListRow>| {
        (!rows.is_empty()).then(|| {
            let heading = format!("{title} ({})", rows.len());
            view! {
                <section class="list-group" aria-labelledby=id>
                    <h2 id=id class="list-group-title">{heading}</h2>
                    <ul class="patient-list">
                        {rows.into_iter().map(|row| view! { <PatientRow row=row /> }).collect_view()}
                    </ul>
                </section>
            }
        })
    };
    let others_title = if today.is_empty() {
        "On your list"
    } else {
        "Also on your list"
    };
    view! {
        <p class="list-count" id="list-count" aria-live="polite">{count}</p>
        {group("Today", "group-today", today)}
        {group(others_title, "group-other", later)}
    }
    .into_any()
}

#[component]
pub fn ListScreen() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let rows = RwSignal::new(Load::<Vec<ListRow>>::Loading);
    // Answers can overtake each other while typing; only the newest request may set the list.
    let latest = StoredValue::new(0u64);
    let first_load = StoredValue::new(true);

    Effect::new(move |_| {
        let search = ctx.search.get();
        ctx.data_version.track();
        let ticket = latest.get_value() + 1;
        latest.set_value(ticket);
        spawn_local(async move {
            let query = search.trim().to_owned();
            let answer = ctx
                .backend
                .list_patients((!query.is_empty()).then_some(query.as_str()))
                .await;
            if latest.get_value() != ticket {
                return;
            }
            match answer {
                Ok(list) => rows.set(Load::Ready(list)),
                Err(e) => {
                    ctx.note_error(&e);
                    rows.set(Load::Failed(e));
                }
            }
            if first_load.get_value() {
                first_load.set_value(false);
                // Give focus back to the row of the record just closed, else to the search box.
                request_animation_frame(move || match ctx.last_opened.get_untracked() {
                    Some(id) => focus(&format!(".patient-row[data-patient=\"{id}\"]")),
                    None => focus("#search"),
                });
            }
        });
    });

    let retry = move |_| ctx.data_version.update(|v| *v += 1);

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
                        on:input=move |ev| ctx.search.set(event_target_value(&ev))
                        aria-describedby="list-count"
                    />
                </div>
            </div>
            <div class="list-body">
                {move || match rows.get() {
                    Load::Loading => {
                        view! {
                            <div class="state-box" role="status">
                                <span class="spinner" aria-hidden="true"></span>
                                <p class="state-title">"Loading your list…"</p>
                            </div>
                        }
                            .into_any()
                    }
                    Load::Failed(e) => {
                        view! {
                            <div class="state-box error" role="alert">
                                <p class="state-title">"Your list could not be read"</p>
                                <p>{e.message}</p>
                                <button class="button" type="button" on:click=retry>
                                    "Try again"
                                </button>
                            </div>
                        }
                            .into_any()
                    }
                    Load::Ready(list) => {
                        view! { <Rows rows=list search=ctx.search.get_untracked() /> }.into_any()
                    }
                }}
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
}
