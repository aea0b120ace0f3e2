//! The arrows between the server's modules, checked on their sources: each module names only
//! the modules below it (its tests may name more). `store`'s own modules are checked by
//! `store::tests`.
//!
//! ```text
//! run, demo, api  ->  notes, breakglass  ->  pull, import, lists, auth, admin, access
//!                 ->  audit  ->  store
//!                     pull -> cursor, lists;  tls, checkpoint -> cursor (file writing);
//!                     checkpoint -> audit;  run -> checkpoint
//!                     auth -> limits, totp_key;  totp_key -> cursor (file writing), store
//! api -> accounts -> admin, auth, limits, totp_key
//! run -> console -> api and the modules the API calls (never the store's backends)
//! ```

use std::path::PathBuf;

/// The package's directory at run time (a test binary built in another clone reads this one).
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Each module and the modules of the crate its code may name.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cursor.rs", &[]),
    ("decisions.rs", &[]),
    ("limits.rs", &[]),
    ("totp_key.rs", &["cursor", "store"]),
    ("audit.rs", &["store"]),
    ("checkpoint.rs", &["audit", "cursor", "store"]),
    ("lists.rs", &["store"]),
    ("access.rs", &["audit", "store"]),
    ("pull.rs", &["cursor", "decisions", "lists", "store"]),
    ("import.rs", &["audit", "store"]),
    ("auth.rs", &["audit", "limits", "store", "totp_key"]),
    ("admin.rs", &["audit", "store"]),
    (
        "accounts.rs",
        &["admin", "audit", "auth", "limits", "store", "totp_key"],
    ),
    ("notes.rs", &["audit", "import", "lists", "pull", "store"]),
    ("breakglass.rs", &["audit", "lists", "pull", "store"]),
    ("bookings.rs", &["audit", "auth", "lists", "pull", "store"]),
    ("caseloads.rs", &["audit", "bookings", "store"]),
    ("figures.rs", &["lists", "store"]),
    ("tls.rs", &["cursor"]),
    (
        "api.rs",
        &[
            "access",
            "accounts",
            "admin",
            "audit",
            "auth",
            "bookings",
            "breakglass",
            "caseloads",
            "cursor",
            "decisions",
            "figures",
            "import",
            "limits",
            "notes",
            "pull",
            "store",
            "totp_key",
        ],
    ),
    (
        "demo.rs",
        &[
            "audit",
            "auth",
            "bookings",
            "caseloads",
            "cursor",
            "import",
            "lists",
            "notes",
            "store",
            "totp_key",
        ],
    ),
    // The console: pages over the same functions as the API (and its state).
    ("console/html.rs", &[]),
    (
        "console/mod.rs",
        &[
            "access",
            "accounts",
            "api",
            "auth",
            "bookings",
            "breakglass",
            "caseloads",
            "figures",
            "store",
        ],
    ),
    (
        "console/manage.rs",
        &["accounts", "admin", "api", "auth", "bookings", "figures"],
    ),
    (
        "console/privacy.rs",
        &["access", "api", "auth", "breakglass"],
    ),
    ("console/reception.rs", &["api", "bookings"]),
    ("console/teams.rs", &["api", "bookings", "caseloads"]),
    (
        "run.rs",
        &[
            "admin",
            "api",
            "auth",
            "console",
            "checkpoint",
            "cursor",
            "decisions",
            "limits",
            "store",
            "tls",
            "totp_key",
        ],
    ),
];

/// The modules a source names as `crate::NAME` or in `use crate::{NAME, ...}`, outside
/// comments and its `#[cfg(test)]` module.
fn named_modules(text: &str) -> Vec<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let needle = concat!("crate", "::");
    let mut out = Vec::new();
    for (at, _) in code.match_indices(needle) {
        let rest = &code[at + needle.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    out.push(name.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_module_names_only_the_modules_below_it() {
    let dir = manifest_dir().join("src");
    for (file, allowed) in ALLOWED {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for name in named_modules(&text) {
            assert!(
                allowed.contains(&name.as_str()),
                "{file} names crate::{name}, which is not below it"
            );
        }
    }
}

#[test]
fn every_module_has_its_place_in_the_table() {
    let dir = manifest_dir().join("src");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rs"))
        .filter(|n| {
            ![
                "lib.rs",
                "main.rs",
                "convergence_tests.rs",
                "layering_tests.rs",
            ]
            .contains(&n.as_str())
        })
        .collect();
    // The console's own files (its tests aside).
    files.extend(
        std::fs::read_dir(dir.join("console"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".rs") && n != "tests.rs")
            .map(|n| format!("console/{n}")),
    );
    files.sort();
    let mut listed: Vec<String> = ALLOWED.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "a new module needs a line in ALLOWED");
}

#[test]
fn the_check_sees_both_spellings() {
    let text = "use crate::audit;\nuse crate::{pull::X, store};\nfn f() { crate::api::g() }\n// crate::run\n";
    assert_eq!(named_modules(text), ["api", "audit", "pull", "store"]);
}
