//! Sync status: when this device last synced and whether the server answers, what the last
//! sync brought down and sent up, every note still waiting or refused (with the patient and
//! the reason), the last errors in plain words, and a button to try again.

use std::collections::HashMap;

use doorstep_ipc::{NoteState, NoteSummary, SyncStatus, SyncSummary};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{Ctx, Load, SyncView, focus, format, sync_bar};

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// "2 patients added, 14 items updated, ..." for the last sync; "nothing new" when empty.
pub fn brought(s: &SyncSummary) -> Vec<String> {
    let mut lines = Vec::new();
    if s.rebuilt {
        lines.push("Your whole list was refreshed from the server".to_owned());
    }
    for (n, one, many) in [
        (
            s.patients_added,
            "patient added to this device",
            "patients added to this device",
        ),
        (
            s.patients_removed,
            "patient removed (their list entry ended)",
            "patients removed (their list entries ended)",
        ),
        (
            s.items_updated,
            "record item new or changed",
            "record items new or changed",
        ),
        (
            s.items_removed,
            "record item removed",
            "record items removed",
        ),
        (
            s.other_changes,
            "list or sharing change",
            "list or sharing changes",
        ),
    ] {
        if n > 0 {
            lines.push(plural(n, one, many));
        }
    }
    if lines.is_empty() {
        lines.push("Nothing new: this device already had the latest records".to_owned());
    }
    lines
}

#[component]
pub fn SyncScreen() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // Notes on this device and the names of their patients, reloaded after each sync.
    let notes = RwSignal::new(Load::<(Vec<NoteSummary>, HashMap<String, String>)>::Loading);
    Effect::new(move |_| {
        ctx.data_version.track();
        spawn_local(async move {
            let answer = ctx.backend.notes(None).await;
            let names: HashMap<String, String> = match ctx.backend.list_patients(None, None).await {
                Ok(page) => page
                    .rows
                    .into_iter()
                    .map(|r| (r.patient_id, r.name))
                    .collect(),
                Err(_) => HashMap::new(),
            };
            match answer {
                Ok(list) => notes.set(Load::Ready((list, names))),
                Err(e) => {
                    ctx.note_error(&e);
                    notes.set(Load::Failed(e));
                }
            }
        });
    });
    ctx.refresh_sync();
    request_animation_frame(|| focus("#sync-title"));
    let busy = move || ctx.is_syncing();
    view! {
        <section class="screen medium sync-screen" aria-labelledby="sync-title">
            <h1 id="sync-title" tabindex="-1">"Sync status"</h1>
            {move || match ctx.sync.get() {
                SyncView::Unknown => view! { <p role="status">"Checking…"</p> }.into_any(),
                SyncView::Failed(e) => view! {
                    <p class="notice error" role="alert">{format!("The status could not be read: {}", e.message)}</p>
                }
                .into_any(),
                SyncView::Known(st) => view! { <StatusPanel st=st /> }.into_any(),
            }}
            <div class="actions">
                <button id="sync-retry" class="button primary" type="button"
                    aria-keyshortcuts="Alt+S"
                    disabled=busy
                    on:click=move |_| sync_bar::sync_now(ctx)>
                    {move || if busy() { "Syncing…" } else { "Sync now" }}
                    <span class="key-hint">"Alt+S"</span>
                </button>
            </div>
            <section class="panel" aria-labelledby="waiting-title">
                <h2 id="waiting-title">"Waiting to be sent"</h2>
                {move || match notes.get() {
                    Load::Loading => view! { <p role="status">"Reading…"</p> }.into_any(),
                    Load::Failed(e) => view! { <p class="field-error">{e.message}</p> }.into_any(),
                    Load::Ready((list, names)) => view! { <Outbox notes=list names=names /> }.into_any(),
                }}
            </section>
        </section>
    }
}

#[component]
fn StatusPanel(st: SyncStatus) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let now = ctx.now.get_untracked();
    let reach = match st.server_reachable {
        Some(true) => "The server answers",
        Some(false) => "The server cannot be reached: you are working from the copy on this device",
        None => "Not checked yet",
    };
    let last = match st.last_synced {
        Some(t) => format!("{} ({})", format::instant(t), format::relative(t, now)),
        None => "Never: this device has not synced yet".to_owned(),
    };
    let summary = st.last_sync.clone();
    view! {
        <section class="panel" aria-labelledby="status-title">
            <h2 id="status-title">"This device"</h2>
            <dl class="facts" id="sync-facts">
                <div><dt>"Server"</dt><dd>{reach} <span class="muted">{format!(" · {}", st.server_url)}</span></dd></div>
                <div><dt>"Last synced"</dt><dd id="sync-screen-last">{last}</dd></div>
                <div><dt>"Patients on this device"</dt><dd>{st.patients}</dd></div>
                <div><dt>"Notes waiting"</dt><dd id="sync-screen-waiting">{st.waiting}</dd></div>
            </dl>
            {st.rebuilding_since.map(|t| view! {
                <p class="notice" role="status">
                    {format!("Refreshing your whole list since {}: the records shown are the copy from before, until it completes.", format::instant(t))}
                </p>
            })}
            {st.last_error.clone().map(|e| view! {
                <div class="notice error" role="alert" id="sync-screen-error">
                    <p><strong>"The last sync failed. "</strong>{e}</p>
                    <p>"Doorstep keeps trying on its own; Sync now tries at once."</p>
                </div>
            })}
            {st.last_push_error.clone().map(|e| view! {
                <div class="notice error" role="alert" id="sync-screen-push-error">
                    <p><strong>"Notes could not be sent. "</strong>{e}</p>
                    <p>"They stay on this device and are sent again at the next sync."</p>
                </div>
            })}
        </section>
        <section class="panel" aria-labelledby="brought-title">
            <h2 id="brought-title">"The last sync"</h2>
            {match summary {
                None => view! { <p class="empty">"No sync has completed on this device yet."</p> }.into_any(),
                Some(s) => {
                    let when = format!(
                        "{}, in {:.1} s",
                        format::instant(s.at),
                        s.duration_ms as f64 / 1000.0
                    );
                    let sent = match (s.sent, s.refused) {
                        (0, 0) => "Nothing to send".to_owned(),
                        (n, 0) => format!("{} sent and accepted", plural(n, "item", "items")),
                        (n, r) => format!(
                            "{} sent and accepted; {} refused (see below)",
                            plural(n, "item", "items"),
                            plural(r, "note", "notes")
                        ),
                    };
                    view! {
                        <p class="muted">{when}</p>
                        <ul class="brought" id="sync-brought">
                            {brought(&s).into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}
                            <li>{sent}</li>
                        </ul>
                    }
                    .into_any()
                }
            }}
        </section>
    }
}

#[component]
fn Outbox(notes: Vec<NoteSummary>, names: HashMap<String, String>) -> impl IntoView {
    let open: Vec<NoteSummary> = notes
        .into_iter()
        .filter(|n| matches!(n.state, NoteState::Waiting | NoteState::Rejected { .. }))
        .collect();
    if open.is_empty() {
        return view! {
            <p class="empty" id="outbox-empty">"Nothing is waiting: every note written here has reached the server."</p>
        }
        .into_any();
    }
    view! {
        <ul class="items" id="outbox">
            {open
                .into_iter()
                .map(|n| {
                    let who = names
                        .get(&n.patient_id)
                        .cloned()
                        .unwrap_or_else(|| "A patient no longer on your list".to_owned());
                    let (state, class, why) = match &n.state {
                        NoteState::Rejected { reason } => {
                            ("Refused by the server", "note-state refused", Some(reason.clone()))
                        }
                        _ => ("Waiting to be sent", "note-state waiting", None),
                    };
                    let first_line: String = n.text.lines().next().unwrap_or("").chars().take(90).collect();
                    view! {
                        <li class="item">
                            <div class="item-title">{who}</div>
                            <div class="item-detail">{format!("Signed {}: {first_line}", format::instant(n.signed_at))}</div>
                            <div class=class>{state}</div>
                            {why.map(|w| view! { <div class="item-detail">{format!("Reason: {w}")}</div> })}
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_sync_is_told_in_words() {
        let s = SyncSummary {
            patients_added: 2,
            items_updated: 1,
            ..SyncSummary::default()
        };
        assert_eq!(
            brought(&s),
            vec![
                "2 patients added to this device".to_owned(),
                "1 record item new or changed".to_owned()
            ]
        );
        assert_eq!(
            brought(&SyncSummary::default()),
            vec!["Nothing new: this device already had the latest records".to_owned()]
        );
    }
}
