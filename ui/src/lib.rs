//! Doorstep's user interface: a Leptos client-side app compiled to wasm32 and shown in the Tauri
//! shell's window.
//!
//! Rules of this crate:
//! - Screens only. It talks to the shell through [`backend::Backend`] (Tauri `invoke` with the
//!   command names and types of `doorstep-ipc`) and knows no SQL, no HTTP and no file system.
//! - Every screen has a loading, an empty, an offline and an error state; nothing waits silently.
//! - Keyboard first: real `<button>`s and form controls, visible focus, Escape goes back from a
//!   record to the list. Large type and a dark, high-contrast theme for a van at night.
//! - Stable element ids and `data-*` attributes (`#search`, `.patient-row[data-nhs]`, `#banner`,
//!   ...) are a contract with the end-to-end WebDriver test: change them only together.
//! - Nothing about a patient is written to the console.
//!
//! The app is one [`Ctx`] in Leptos context (which screen, who is signed in, the search text, the
//! last sync status) and one component per screen under [`screens`].

pub mod backend;
pub mod format;
pub mod screens;
pub mod shortcuts;
pub mod sync_bar;
pub mod theme;

use chrono::{DateTime, Utc};
use doorstep_ipc::{AppState, IpcError, IpcErrorKind, SyncStatus, UserSummary};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;

use crate::backend::Backend;
use crate::screens::{
    BreakGlassScreen, ComposerScreen, EnrolScreen, ListScreen, RecordScreen, SettingsScreen,
    SyncScreen, UnlockScreen,
};
use crate::sync_bar::SyncBar;

/// What the main area shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Screen {
    /// Asking the shell where we are.
    Starting,
    /// The shell could not be asked (for example the page was opened outside the app).
    StartFailed(IpcError),
    Enrol {
        server_url: Option<String>,
        /// The device is enrolled already and the user chose to sign in again (forgotten PIN,
        /// too many wrong PINs): the screen offers a way back to the unlock screen.
        again: bool,
    },
    Unlock {
        username: String,
        server_url: String,
    },
    List,
    Record {
        patient_id: String,
    },
    /// The note composer for the patient whose record was open.
    Compose {
        patient_id: String,
    },
    /// Emergency access to a patient not on the list.
    BreakGlass,
    /// What the last sync did, what waits to be sent, errors and a retry.
    Sync,
    /// Theme, this device, PIN, shortcuts, sign out.
    Settings,
}

impl Screen {
    pub fn is_unlocked(&self) -> bool {
        matches!(
            self,
            Screen::List
                | Screen::Record { .. }
                | Screen::Compose { .. }
                | Screen::BreakGlass
                | Screen::Sync
                | Screen::Settings
        )
    }
}

/// A value that arrives from the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Load<T> {
    Loading,
    Ready(T),
    Failed(IpcError),
}

/// The latest sync status known to the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncView {
    Unknown,
    Known(SyncStatus),
    Failed(IpcError),
}

/// App-wide state, shared through Leptos context. All fields are `Copy` handles.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub backend: Backend,
    pub screen: RwSignal<Screen>,
    pub user: RwSignal<Option<UserSummary>>,
    /// The list's search text; kept while a record is open so Escape returns to the same list.
    pub search: RwSignal<String>,
    /// The patient whose record was open last, to give focus back to their row.
    pub last_opened: RwSignal<Option<String>>,
    pub sync: RwSignal<SyncView>,
    /// A sync started from this window is running.
    pub sync_requested: RwSignal<bool>,
    /// Bumped whenever a sync completes, so open screens reload from the cache.
    pub data_version: RwSignal<u64>,
    /// The time the relative labels ("5 min ago") are computed against.
    pub now: RwSignal<DateTime<Utc>>,
    /// The patient whose record was shown last (id, name), so that opening another one says
    /// so (hazard H2).
    pub shown_patient: RwSignal<Option<(String, String)>>,
}

impl Ctx {
    fn new() -> Self {
        Self {
            backend: Backend,
            screen: RwSignal::new(Screen::Starting),
            user: RwSignal::new(None),
            search: RwSignal::new(String::new()),
            last_opened: RwSignal::new(None),
            sync: RwSignal::new(SyncView::Unknown),
            sync_requested: RwSignal::new(false),
            data_version: RwSignal::new(0),
            now: RwSignal::new(Utc::now()),
            shown_patient: RwSignal::new(None),
        }
    }

    /// Shows the screen the shell's state calls for.
    pub fn apply_state(&self, state: AppState) {
        match state {
            AppState::NotEnrolled { server_url } => {
                self.user.set(None);
                self.sync.set(SyncView::Unknown);
                self.screen.set(Screen::Enrol {
                    server_url,
                    again: false,
                });
            }
            AppState::Locked {
                username,
                server_url,
            } => {
                self.user.set(None);
                self.sync.set(SyncView::Unknown);
                self.search.set(String::new());
                self.last_opened.set(None);
                self.shown_patient.set(None);
                self.screen.set(Screen::Unlock {
                    username,
                    server_url,
                });
            }
            AppState::Unlocked { user } => {
                self.user.set(Some(user));
                self.screen.set(Screen::List);
                self.refresh_sync();
            }
        }
    }

    /// Asks the shell where we are and shows that screen.
    pub fn refresh_state(&self) {
        let ctx = *self;
        spawn_local(async move {
            match ctx.backend.app_state().await {
                Ok(state) => ctx.apply_state(state),
                Err(e) => ctx.screen.set(Screen::StartFailed(e)),
            }
        });
    }

    /// A screen got an error: a locked cache (idle lock, or the shell restarted) or a revoked
    /// device sends the user back to the unlock screen; anything else the screen shows itself.
    pub fn note_error(&self, e: &IpcError) {
        if matches!(e.kind, IpcErrorKind::Locked | IpcErrorKind::DeviceRevoked) {
            self.refresh_state();
        }
    }

    /// Fetches the sync status now (outside the regular poll).
    pub fn refresh_sync(&self) {
        let ctx = *self;
        spawn_local(async move {
            let answer = ctx.backend.sync_status().await;
            ctx.take_sync_answer(answer);
        });
    }

    /// Records a sync status answer; a newer `last_synced` means the cache changed.
    pub fn take_sync_answer(&self, answer: Result<SyncStatus, IpcError>) {
        self.now.set(Utc::now());
        match answer {
            Ok(status) => {
                let previous = self.sync.with_untracked(|s| match s {
                    SyncView::Known(old) => Some(old.last_synced),
                    _ => None,
                });
                // From an unknown state, any completed sync may hold data the open screen has
                // not read yet.
                let changed = match previous {
                    Some(old) => old != status.last_synced,
                    None => status.last_synced.is_some(),
                };
                self.sync.set(SyncView::Known(status));
                if changed {
                    self.data_version.update(|v| *v += 1);
                }
            }
            Err(e) => {
                self.note_error(&e);
                self.sync.set(SyncView::Failed(e));
            }
        }
    }

    /// A sync asked for here, or one the shell says is running (tracked).
    pub fn is_syncing(&self) -> bool {
        self.sync_requested.get()
            || self
                .sync
                .with(|s| matches!(s, SyncView::Known(st) if st.syncing))
    }

    pub fn lock(&self) {
        let ctx = *self;
        spawn_local(async move {
            match ctx.backend.lock().await {
                Ok(state) => ctx.apply_state(state),
                Err(e) => ctx.sync.set(SyncView::Failed(e)),
            }
        });
    }
}

/// Waits `ms` milliseconds without blocking the page.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Moves keyboard focus to the first element matching `selector`, if any.
pub fn focus(selector: &str) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    if let Ok(Some(el)) = doc.query_selector(selector)
        && let Ok(el) = el.dyn_into::<web_sys::HtmlElement>()
    {
        let _ = el.focus();
    }
}

/// True when nothing but the page itself has keyboard focus, so a screen may place it without
/// taking it from where the user put it.
pub fn focus_is_free() -> bool {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
        return false;
    };
    doc.active_element()
        .is_none_or(|el| el.tag_name().eq_ignore_ascii_case("body"))
}

/// A header button that opens a screen, marked as the current page while it is shown.
#[component]
fn ScreenButton(
    id: &'static str,
    screen: Screen,
    label: &'static str,
    keys: &'static str,
) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let here = screen.clone();
    view! {
        <button
            id=id
            class="button secondary"
            type="button"
            aria-keyshortcuts=keys
            aria-current=move || (ctx.screen.get() == here).then_some("page")
            on:click=move |_| ctx.screen.set(screen.clone())
        >
            {label}
            <span class="key-hint">{keys}</span>
        </button>
    }
}

#[component]
fn Header() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <header class="app-header">
            <span class="app-name">"Doorstep"</span>
            {move || {
                ctx.user
                    .get()
                    .map(|u| {
                        view! {
                            <span class="app-user">
                                <span class="app-user-name">{u.display_name}</span>
                                <span class="app-user-role">
                                    {format!("{} · {}", format::role(&u.role), u.service)}
                                </span>
                            </span>
                            <nav class="app-nav" aria-label="Doorstep">
                                <ScreenButton id="open-sync" screen=Screen::Sync label="Sync status" keys="Alt+Y" />
                                <ScreenButton id="open-settings" screen=Screen::Settings label="Settings" keys="Alt+O" />
                                <button
                                    id="lock"
                                    class="button secondary"
                                    type="button"
                                    aria-keyshortcuts="Alt+L"
                                    on:click=move |_| ctx.lock()
                                >
                                    "Lock"
                                    <span class="key-hint">"Alt+L"</span>
                                </button>
                            </nav>
                        }
                    })
            }}
        </header>
    }
}

#[component]
fn Main() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || match ctx.screen.get() {
        Screen::Starting => view! {
            <div class="state-box" role="status">
                <p class="state-title">"Starting Doorstep…"</p>
            </div>
        }
        .into_any(),
        Screen::StartFailed(e) => view! {
            <div class="state-box error" role="alert">
                <p class="state-title">"Doorstep could not start"</p>
                <p>{e.message}</p>
                <button class="button" type="button" on:click=move |_| ctx.refresh_state()>
                    "Try again"
                </button>
            </div>
        }
        .into_any(),
        Screen::Enrol { server_url, again } => {
            view! { <EnrolScreen server_url=server_url again=again /> }.into_any()
        }
        Screen::Unlock {
            username,
            server_url,
        } => view! { <UnlockScreen username=username server_url=server_url /> }.into_any(),
        Screen::List => view! { <ListScreen /> }.into_any(),
        Screen::Record { patient_id } => {
            view! { <RecordScreen patient_id=patient_id /> }.into_any()
        }
        Screen::Compose { patient_id } => {
            view! { <ComposerScreen patient_id=patient_id /> }.into_any()
        }
        Screen::BreakGlass => view! { <BreakGlassScreen /> }.into_any(),
        Screen::Sync => view! { <SyncScreen /> }.into_any(),
        Screen::Settings => view! { <SettingsScreen /> }.into_any(),
    }
}

/// Milliseconds between activity pings to the shell.
const ACTIVITY_PING_MS: f64 = 30_000.0;

/// Tells the shell the user is active (restarting its idle-lock timer), at most every 30 s.
/// The answer doubles as a check that the device was not locked meanwhile.
fn start_activity_pings(ctx: Ctx) {
    let last = StoredValue::new(0.0_f64);
    // The last key or pointer press, for the window's own idle lock below.
    let last_input = StoredValue::new(js_sys::Date::now());
    let ping = move || {
        let now = js_sys::Date::now();
        last_input.set_value(now);
        if !ctx.screen.with_untracked(Screen::is_unlocked)
            || now - last.get_value() < ACTIVITY_PING_MS
        {
            return;
        }
        last.set_value(now);
        spawn_local(async move {
            if let Ok(state @ (AppState::Locked { .. } | AppState::NotEnrolled { .. })) =
                ctx.backend.app_state().await
            {
                ctx.apply_state(state);
            }
        });
    };
    // The window locks itself at the idle deadline (the shell's own timer looks every second
    // too): the record leaves the screen at once, not when the next command finds the shell
    // locked. The deadline is the one the shell answers in every status (the agreements').
    spawn_local(async move {
        // The last deadline the shell gave (kept while the status is not known, as after an
        // unlock); the default until it gives one.
        let mut known_secs: u64 = 300;
        loop {
            sleep(500).await;
            if !ctx.screen.with_untracked(Screen::is_unlocked) {
                last_input.set_value(js_sys::Date::now());
                continue;
            }
            if let Some(secs) = ctx.sync.with_untracked(|s| match s {
                SyncView::Known(st) if st.idle_lock_secs > 0 => Some(st.idle_lock_secs),
                _ => None,
            }) {
                known_secs = secs;
            }
            if js_sys::Date::now() - last_input.get_value() >= known_secs as f64 * 1000.0 {
                ctx.lock();
                last_input.set_value(js_sys::Date::now());
            }
        }
    });
    let keys = window_event_listener(leptos::ev::keydown, move |_| ping());
    let pointer = window_event_listener(leptos::ev::pointerdown, move |_| ping());
    on_cleanup(move || {
        keys.remove();
        pointer.remove();
    });
}

#[component]
pub fn App() -> impl IntoView {
    let ctx = Ctx::new();
    provide_context(ctx);
    provide_context(theme::Theme::start());
    shortcuts::start(ctx);
    ctx.refresh_state();
    sync_bar::start_polling(ctx);
    start_activity_pings(ctx);
    view! {
        <div class="app">
            <Header />
            <main class="app-main" id="main">
                <Main />
            </main>
            <SyncBar />
        </div>
    }
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}
