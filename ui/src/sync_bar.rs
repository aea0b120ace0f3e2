//! The sync status bar at the foot of every screen: when the device last synced, whether the
//! server answers, how many patients the device holds, and a "Sync now" button.

use chrono::Utc;
use doorstep_ipc::SyncStatus;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{Ctx, Screen, SyncView, format, sleep};

/// Seconds between status polls while idle, and while a sync is running.
const POLL_IDLE_SECS: i64 = 15;
const POLL_SYNCING_SECS: i64 = 2;

/// Polls the shell's sync status while the device is unlocked, for the life of the page, and
/// syncs when the system says the network is back (the shell also notices regained signal on
/// its own, by probing the server while syncs fail).
pub fn start_polling(ctx: Ctx) {
    let online = window_event_listener(leptos::ev::online, move |_| {
        if ctx.screen.with_untracked(Screen::is_unlocked) {
            sync_now(ctx);
        }
    });
    // For the life of the page: the listener is never removed.
    std::mem::forget(online);
    spawn_local(async move {
        let mut last_poll = Utc::now() - chrono::Duration::seconds(POLL_IDLE_SECS);
        loop {
            sleep(1000).await;
            let screen_unlocked = ctx.screen.with_untracked(Screen::is_unlocked);
            if !screen_unlocked {
                continue;
            }
            let syncing = ctx.sync.with_untracked(|s| match s {
                SyncView::Known(st) => st.syncing,
                _ => false,
            });
            let wait = if syncing {
                POLL_SYNCING_SECS
            } else {
                POLL_IDLE_SECS
            };
            if (Utc::now() - last_poll).num_seconds() < wait {
                continue;
            }
            last_poll = Utc::now();
            let answer = ctx.backend.sync_status().await;
            // The user may have locked while the answer was on its way.
            if ctx.screen.with_untracked(Screen::is_unlocked) {
                ctx.take_sync_answer(answer);
            }
        }
    });
}

pub fn sync_now(ctx: Ctx) {
    if ctx.sync_requested.get_untracked() {
        return;
    }
    ctx.sync_requested.set(true);
    spawn_local(async move {
        let answer = ctx.backend.sync_now().await;
        ctx.sync_requested.set(false);
        ctx.take_sync_answer(answer);
        // Always reload the open screen after a manual sync, even if nothing changed.
        ctx.data_version.update(|v| *v += 1);
    });
}

/// The first clause of a sync error, short enough for the status bar (the full text is in the
/// element's title): "The server could not be reached: error sending request: ..." becomes
/// "The server could not be reached".
pub fn short_error(e: &str) -> String {
    const MAX: usize = 90;
    let first = e.split(": ").next().unwrap_or(e).trim();
    if first.chars().count() > MAX {
        let cut: String = first.chars().take(MAX - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        first.to_owned()
    }
}

#[component]
pub fn SyncBar() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <footer id="sync-status" class="sync-bar" role="status" aria-live="polite">
            {move || match ctx.screen.get() {
                Screen::Starting | Screen::StartFailed(_) => {
                    view! { <span class="sync-item">"Sync status: not known yet"</span> }.into_any()
                }
                Screen::Enrol { .. } => {
                    view! {
                        <span class="sync-item">
                            <span class="dot dot-unknown" aria-hidden="true"></span>
                            "Not enrolled: enrol this device to receive your list"
                        </span>
                    }
                        .into_any()
                }
                Screen::Unlock { server_url, .. } => {
                    view! {
                        <span class="sync-item">
                            <span class="dot dot-unknown" aria-hidden="true"></span>
                            "Locked: sync resumes after unlock"
                        </span>
                        <span class="sync-item muted">{server_url}</span>
                    }
                        .into_any()
                }
                Screen::List
                | Screen::Record { .. }
                | Screen::Compose { .. }
                | Screen::BreakGlass
                | Screen::Sync
                | Screen::Settings => view! { <UnlockedStatus /> }.into_any(),
            }}
        </footer>
    }
}

#[component]
fn UnlockedStatus() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let busy = move || ctx.is_syncing();
    view! {
        {move || match ctx.sync.get() {
            SyncView::Unknown => {
                view! { <span class="sync-item">"Checking sync status…"</span> }.into_any()
            }
            SyncView::Failed(e) => {
                view! {
                    <span class="sync-item sync-error">
                        {format!("Sync status unavailable: {}", e.message)}
                    </span>
                }
                    .into_any()
            }
            SyncView::Known(st) => view! { <StatusItems st=st /> }.into_any(),
        }}
        <button
            id="sync-now"
            class="button sync-button"
            type="button"
            on:click=move |_| sync_now(ctx)
            disabled=busy
        >
            {move || if busy() { "Syncing…" } else { "Sync now" }}
        </button>
    }
}

#[component]
fn StatusItems(st: SyncStatus) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let now = ctx.now.get_untracked();
    let (dot, reach) = match st.server_reachable {
        Some(true) => ("dot dot-online", "Server reachable".to_owned()),
        Some(false) => (
            "dot dot-offline",
            "Offline: showing the copy on this device".to_owned(),
        ),
        None => ("dot dot-unknown", "Server not checked yet".to_owned()),
    };
    let last = match st.last_synced {
        Some(t) => format!(
            "Last synced {} ({})",
            format::relative(t, now),
            format::instant(t)
        ),
        None => "Not synced yet".to_owned(),
    };
    let patients = match st.patients {
        1 => "1 patient".to_owned(),
        n => format!("{n} patients"),
    };
    let waiting = (st.waiting > 0).then(|| format!("{} waiting to send", st.waiting));
    let rebuilding = st.rebuilding_since.map(|t| {
        format!(
            "Refreshing your whole list: records shown are the copy from before {}",
            format::instant(t)
        )
    });
    view! {
        <span class="sync-item" data-reachable=st.server_reachable.map(|r| r.to_string())>
            <span class=dot aria-hidden="true"></span>
            {reach}
        </span>
        <span class="sync-item" id="sync-last">{last}</span>
        <span class="sync-item" id="sync-patients">{patients}</span>
        {waiting.map(|w| view! { <span class="sync-item">{w}</span> })}
        {rebuilding
            .map(|r| view! { <span class="sync-item sync-stale" id="sync-rebuilding">{r}</span> })}
        {st.syncing.then(|| view! { <span class="sync-item syncing">"Syncing…"</span> })}
        {st
            .last_error
            .map(|e| {
                view! {
                    <span class="sync-item sync-error" id="sync-error" title=e.clone()>
                        {format!("Last sync failed: {}", short_error(&e))}
                    </span>
                }
            })}
    }
}

#[cfg(test)]
mod tests {
    use super::short_error;

    #[test]
    fn sync_errors_are_shortened_to_their_first_clause() {
        assert_eq!(
            short_error(
                "The server could not be reached: error sending request: client error (Connect)"
            ),
            "The server could not be reached"
        );
        assert_eq!(short_error("Wrong password"), "Wrong password");
        let long = "x".repeat(200);
        assert_eq!(short_error(&long).chars().count(), 90);
    }
}
