//! Doorstep federation server.
//!
//! The federation server gathers the records of its member GP practices (FHIR R4 bundles from
//! their systems), applies the sharing agreements, and serves each clinician's device the
//! patients on that clinician's list, filtered, through an offline-first change feed.
//!
//! # Parts
//!
//! - [`store`]: the [`store::Store`] trait (async, no SQL types through it) and the embedded
//!   SQLite implementation ([`store::sqlite::SqliteStore`]: WAL, foreign keys, migrations from
//!   `migrations/server-sqlite/`). PostgreSQL comes later behind the same trait.
//! - [`pull`]: the pull algorithm (one page of changes after a cursor; convergence).
//! - [`cursor`]: the signed, opaque cursor and its rules (invalid, access changed, expired).
//! - [`auth`]: Argon2id passwords, TOTP, device tokens (hashed, rotated, revocable), lockout.
//! - [`api`]: the axum routes (`/healthz`, `/api/v1/...`), documented in `server/openapi.json`.
//! - [`tls`]: rustls (ring) configuration and the development CA of `--dev-tls`.
//! - [`run`]: start and stop a server (used by the binary and by tests).
//! - [`demo`]: the synthetic demo federation with its services, agreements, lists and users.
//! - [`audit`]: the hash chain of the append-only audit log.
//!
//! # Rules
//!
//! - Filtering happens here: data an agreement excludes (RCGP exclusion sets, confidential
//!   items, sections not shared, look-back windows, code filters) never leaves the server; the
//!   device is only told how many items of a section were withheld.
//! - Logs (tracing, stderr) never carry patient data: no names, NHS numbers or record content.
//!   They name users, devices and counts. Patient ids appear only in the audit log, which is
//!   what a privacy officer reads.
//! - An import is whole or nothing; a rejected bundle's error names the entry and the element.
//! - Plain HTTP only on loopback, and only when asked for.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cursor;
pub mod demo;
pub mod pull;
pub mod run;
pub mod store;
pub mod tls;

#[cfg(test)]
mod convergence_tests;
