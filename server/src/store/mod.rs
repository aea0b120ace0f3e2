//! The federation store: the contract every backend implements, its rows, and [`open`],
//! which picks the backend from a database URL.
//!
//! # Layers
//!
//! ```text
//! api, run, main, demo
//!   └─► pull (+ cursor), import, auth, audit      decide: what to send, write, hash
//!         └─► store::contract                      RecordStore, IdentityStore, ListStore,
//!               │                                  FeedStore (+ FeedSnapshot), AuditStore; Store
//!               └─► store::rows                    rows and StoreError
//!         store::sqlite ──► contract, rows         a backend: reads and writes rows only
//!         store::postgres ──► contract, rows       another backend, for several nodes
//!         store (this module) ──► url, backends    open(url)
//! ```
//!
//! Arrows point one way: nothing in `store` imports a module above it (a test below reads the
//! sources to keep it so), and a backend never imports another backend.
//!
//! # What a backend implements
//!
//! The five area traits of [`contract`] ([`Store`] follows from them). The pull algorithm
//! ([`crate::pull`]), the import planner ([`crate::import`]) and the audit chain
//! ([`crate::audit`]) are written once, above the contract; a backend supplies reads (one
//! [`FeedSnapshot`] per pull page, the [`ImportBasis`] of an import, the audit tip) and applies
//! planned writes in one transaction, re-checking what they were planned on.
//!
//! The embedded default is [`sqlite::SqliteStore`]; [`postgres::PostgresStore`] is the
//! production backend, which several server nodes share (see its module doc for how
//! concurrent writers and the feed's seq order are kept safe).

pub mod contract;
pub mod postgres;
pub mod rows;
pub mod sqlite;
pub mod url;

use std::sync::Arc;

pub use contract::{
    AdminStore, AlertStore, AuditSealer, AuditStore, FeedSnapshot, FeedStore, IdentityStore,
    KeyStore, ListStore, NoteStore, RecordStore, SourceStore, StaffStore, Store,
};
// Callers name rows as `store::PatientRow`; the rows module is where they live.
pub use rows::*;
pub use url::DatabaseUrl;

/// Open the store `url` names (creating and migrating it when needed).
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open_file(&path))
                .await
                .map_err(|e| StoreError::Backend(format!("opening the store: {e}")))??;
            Ok(Arc::new(store))
        }
        DatabaseUrl::Postgres(raw) => Ok(Arc::new(
            postgres::PostgresStore::open(raw, &url.to_string()).await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    /// The arrows of the module doc, checked on the sources: the store's modules name nothing
    /// of the server outside `store`, and the rows name nothing of the server at all.
    #[test]
    fn store_imports_nothing_above_it() {
        // Run time, not compile time: a test binary built in another clone reads this one.
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
            .join("src/store");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // Spelt in two halves, so this test's own source does not match.
            let needle = concat!("crate", "::");
            for (at, _) in code.match_indices(needle) {
                assert!(
                    code[at..].starts_with(concat!("crate", "::store")),
                    "{name} imports {} from above the store",
                    code[at..].split([';', ',', '}', ' ']).next().unwrap()
                );
            }
            if name == "rows.rs" || name == "url.rs" {
                for word in [
                    needle,
                    "super::contract",
                    "super::sqlite",
                    "super::postgres",
                ] {
                    assert!(!code.contains(word), "{name} names {word}");
                }
            }
            // A backend never imports another backend.
            for (backend, other) in [("sqlite.rs", "postgres"), ("postgres.rs", "sqlite")] {
                if name == backend {
                    let word = format!("super::{other}");
                    assert!(!code.contains(&word), "{name} names {word}");
                }
            }
            if name != "mod.rs" {
                let open = concat!("super", "::open");
                assert!(!code.contains(open), "{name} names {open}");
            }
            checked += 1;
        }
        assert!(checked >= 6, "only {checked} files checked");
    }
}
