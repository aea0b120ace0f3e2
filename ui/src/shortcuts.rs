//! Keyboard shortcuts: every screen of an unlocked device is reachable without a pointer.
//!
//! Alt with a letter works anywhere, typing included (no letter is lost to the text); the
//! table is shown in Settings and the buttons carry their keys (`aria-keyshortcuts` and a
//! visible hint). Escape goes back and the arrow keys move between record tabs where those
//! screens handle them.

use leptos::ev;
use leptos::prelude::*;

use crate::{Ctx, Screen, focus, sync_bar};

/// One shortcut as Settings lists it.
pub struct Shortcut {
    pub keys: &'static str,
    pub does: &'static str,
}

pub const SHORTCUTS: &[Shortcut] = &[
    Shortcut {
        keys: "Alt+M",
        does: "My list",
    },
    Shortcut {
        keys: "Alt+F",
        does: "Search my list",
    },
    Shortcut {
        keys: "Enter",
        does: "Open the patient whose row has focus",
    },
    Shortcut {
        keys: "← →, Home, End",
        does: "Move between the sections of a record",
    },
    Shortcut {
        keys: "Alt+N",
        does: "Write a note for the patient whose record is open",
    },
    Shortcut {
        keys: "Esc",
        does: "Back to my list",
    },
    Shortcut {
        keys: "Alt+S",
        does: "Sync now",
    },
    Shortcut {
        keys: "Alt+Y",
        does: "Sync status: what came down, what is waiting",
    },
    Shortcut {
        keys: "Alt+E",
        does: "Emergency access to a patient not on my list",
    },
    Shortcut {
        keys: "Alt+O",
        does: "Settings",
    },
    Shortcut {
        keys: "Alt+L",
        does: "Lock Doorstep",
    },
];

/// What an Alt shortcut does, by `KeyboardEvent.code` (the key's place, whatever the layout
/// makes of Alt), or by `key` when the platform gives no code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    List,
    Search,
    WriteNote,
    SyncNow,
    SyncScreen,
    BreakGlass,
    Settings,
    Lock,
}

pub fn action_for(code: &str, key: &str, alt: bool, ctrl: bool, meta: bool) -> Option<Action> {
    if !alt || ctrl || meta {
        return None;
    }
    let code = if code.starts_with("Key") {
        code.to_owned()
    } else {
        format!("Key{}", key.to_ascii_uppercase())
    };
    Some(match code.as_str() {
        "KeyM" => Action::List,
        "KeyF" => Action::Search,
        "KeyN" => Action::WriteNote,
        "KeyS" => Action::SyncNow,
        "KeyY" => Action::SyncScreen,
        "KeyE" => Action::BreakGlass,
        "KeyO" => Action::Settings,
        "KeyL" => Action::Lock,
        _ => return None,
    })
}

/// Listens for the shortcuts for the life of the page.
pub fn start(ctx: Ctx) {
    let keys = window_event_listener(ev::keydown, move |e| {
        // Escape leaves the screens that have no Escape of their own.
        if e.key() == "Escape"
            && !e.default_prevented()
            && matches!(
                ctx.screen.get_untracked(),
                Screen::Sync | Screen::Settings | Screen::BreakGlass
            )
        {
            e.prevent_default();
            ctx.screen.set(Screen::List);
            return;
        }
        let Some(action) = action_for(&e.code(), &e.key(), e.alt_key(), e.ctrl_key(), e.meta_key())
        else {
            return;
        };
        let screen = ctx.screen.get_untracked();
        if !screen.is_unlocked() {
            return;
        }
        e.prevent_default();
        match action {
            Action::List => ctx.screen.set(Screen::List),
            Action::Search => {
                ctx.screen.set(Screen::List);
                request_animation_frame(|| focus("#search"));
            }
            Action::WriteNote => {
                if let Screen::Record { patient_id } = screen {
                    ctx.screen.set(Screen::Compose { patient_id });
                }
            }
            Action::SyncNow => sync_bar::sync_now(ctx),
            Action::SyncScreen => ctx.screen.set(Screen::Sync),
            Action::BreakGlass => ctx.screen.set(Screen::BreakGlass),
            Action::Settings => ctx.screen.set(Screen::Settings),
            Action::Lock => ctx.lock(),
        }
    });
    std::mem::forget(keys);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_alt_alone_with_a_known_letter_is_a_shortcut() {
        assert_eq!(
            action_for("KeyL", "l", true, false, false),
            Some(Action::Lock)
        );
        assert_eq!(action_for("", "l", true, false, false), Some(Action::Lock));
        assert_eq!(action_for("KeyL", "l", false, false, false), None);
        assert_eq!(action_for("KeyL", "l", true, true, false), None);
        assert_eq!(action_for("KeyQ", "q", true, false, false), None);
        assert_eq!(action_for("", "Alt", true, false, false), None);
    }

    #[test]
    fn every_listed_alt_shortcut_does_something() {
        for s in SHORTCUTS.iter().filter(|s| s.keys.starts_with("Alt+")) {
            let letter = s.keys.trim_start_matches("Alt+");
            let code = format!("Key{letter}");
            assert!(
                action_for(&code, "", true, false, false).is_some(),
                "{}",
                s.keys
            );
        }
    }
}
