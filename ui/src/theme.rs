//! Day and night: the theme follows the system's light or dark setting unless the user chose
//! one in Settings. The choice is kept in the web view's local storage (it is no patient data)
//! and shown by `data-theme="light"|"dark"` on `<html>`; style.css changes only its colour
//! variables between the two.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;

const KEY: &str = "doorstep.theme";

/// What the user chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThemeChoice {
    System,
    Dark,
    Light,
}

impl ThemeChoice {
    pub const ALL: [ThemeChoice; 3] = [ThemeChoice::System, ThemeChoice::Dark, ThemeChoice::Light];

    pub fn key(self) -> &'static str {
        match self {
            ThemeChoice::System => "system",
            ThemeChoice::Dark => "dark",
            ThemeChoice::Light => "light",
        }
    }

    pub fn parse(s: &str) -> ThemeChoice {
        match s {
            "dark" => ThemeChoice::Dark,
            "light" => ThemeChoice::Light,
            _ => ThemeChoice::System,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ThemeChoice::System => "Follow this device's setting",
            ThemeChoice::Dark => "Dark, for night",
            ThemeChoice::Light => "Light, for daylight",
        }
    }
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The stored choice (System when none).
pub fn stored() -> ThemeChoice {
    storage()
        .and_then(|s| s.get_item(KEY).ok().flatten())
        .map(|v| ThemeChoice::parse(&v))
        .unwrap_or(ThemeChoice::System)
}

fn system_query() -> Option<web_sys::MediaQueryList> {
    web_sys::window()?
        .match_media("(prefers-color-scheme: light)")
        .ok()?
}

/// True when the system asks for light.
pub fn system_is_light() -> bool {
    system_query().is_some_and(|q| q.matches())
}

/// The theme shown for `choice`: `"light"` or `"dark"`.
pub fn resolved(choice: ThemeChoice) -> &'static str {
    match choice {
        ThemeChoice::Dark => "dark",
        ThemeChoice::Light => "light",
        ThemeChoice::System if system_is_light() => "light",
        ThemeChoice::System => "dark",
    }
}

fn show(choice: ThemeChoice) {
    if let Some(root) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.document_element())
    {
        let _ = root.set_attribute("data-theme", resolved(choice));
    }
}

/// The theme in effect, shared with the settings screen.
#[derive(Clone, Copy)]
pub struct Theme {
    pub choice: RwSignal<ThemeChoice>,
}

impl Theme {
    /// Shows the stored choice now and follows the system's setting while it is "System".
    pub fn start() -> Theme {
        let theme = Theme {
            choice: RwSignal::new(stored()),
        };
        show(theme.choice.get_untracked());
        if let Some(query) = system_query() {
            let choice = theme.choice;
            let on_change = Closure::<dyn FnMut()>::new(move || {
                if choice.get_untracked() == ThemeChoice::System {
                    show(ThemeChoice::System);
                }
            });
            let _ = query
                .add_event_listener_with_callback("change", on_change.as_ref().unchecked_ref());
            // For the life of the page.
            on_change.forget();
        }
        theme
    }

    pub fn choose(&self, choice: ThemeChoice) {
        if let Some(s) = storage() {
            let _ = s.set_item(KEY, choice.key());
        }
        self.choice.set(choice);
        show(choice);
    }
}
