//! Doorstep federation server.
//!
//! The federation server gathers the records of its member GP practices (FHIR R4 bundles from
//! their systems), applies the sharing agreements, and serves each clinician's device the
//! patients on that clinician's list, filtered, through an offline-first change feed.
//!
//! # Parts
//!
//! - [`store`]: the store contract (async traits by area, [`store::Store`] their union, no SQL
//!   types through them), its rows, [`store::open`] (a backend from a database URL) and the
//!   embedded SQLite backend ([`store::sqlite::SqliteStore`]: WAL, foreign keys, migrations
//!   from `migrations/server-sqlite/`) and the PostgreSQL backend
//!   ([`store::postgres::PostgresStore`], `migrations/server-postgres/`), which several server
//!   nodes share: everything a node needs to accept another node's cursor or token is in the
//!   database.
//! - [`pull`]: the pull algorithm and its orchestration (one page of changes after a cursor,
//!   over one read snapshot of any backend; convergence).
//! - [`import`]: validating a bundle, planning its row writes, applying them whole or not at
//!   all.
//! - [`lists`]: the rules of a list entry (break-glass names its user; timed entries end).
//! - [`bookings`]: sessions a service publishes and a receptionist's bookings of her own
//!   practice's patients into them (entries on the session clinician's list).
//! - [`caseloads`]: a team leader's caseload: add, transfer between teams, discharge.
//! - [`figures`]: the service's figures per practice and ISO week, as JSON and CSV.
//! - [`notes`]: consultation notes pushed by devices (stored once, checked, written back into
//!   the record as FHIR), the registered practice's inbox and its acknowledgements.
//! - [`cursor`]: the signed, opaque cursor and its rules (invalid, access changed, expired).
//! - [`auth`]: Argon2id passwords, TOTP, device tokens (hashed, rotated, revocable), lockout.
//! - [`limits`]: sign-in rate limits per address and per username, and the Argon2 gate.
//! - [`totp_key`]: the key TOTP secrets are sealed under (a file, never in the database).
//! - [`api`]: the axum routes (`/healthz`, `/api/v1/...`), documented in `server/openapi.json`.
//! - [`console`]: the web console under `/console` for receptionists, team leaders, service
//!   managers and the privacy officer (server-rendered pages, cookie session, CSRF), calling
//!   the same functions as the API.
//! - [`tls`]: rustls (ring) configuration and the development CA of `--dev-tls`.
//! - [`run`]: start and stop a server (used by the binary and by tests).
//! - [`demo`]: the synthetic demo federation with its services, agreements, lists and users.
//! - [`accounts`]: users and devices as administrators manage them (add, disable, enable,
//!   unlock, reset TOTP; list and revoke devices), each audited with who and why.
//! - [`audit`]: the hash chain of the append-only audit log, sealed here for every backend.
//! - [`admin`]: administration (agreements created, updated, retired and compared; patient
//!   dissent; exclusion value sets loaded), each change audited with who and why; the
//!   server's exclusion sets (the shipped floor extended by loads), cached per node.
//!
//! Arrows inside the server point one way: `api`/`run`/`demo` -> `pull`/`import`/`lists`/
//! `auth`/`audit` -> the store contract -> its rows; each backend -> the contract and the rows.
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

pub mod access;
pub mod accounts;
pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod bookings;
pub mod breakglass;
pub mod caseloads;
pub mod checkpoint;
pub mod console;
pub mod cursor;
pub mod decisions;
pub mod demo;
pub mod figures;
pub mod import;
pub mod limits;
pub mod lists;
pub mod notes;
pub mod pull;
pub mod run;
pub mod store;
pub mod tls;
pub mod totp_key;

#[cfg(test)]
mod convergence_tests;
#[cfg(test)]
mod layering_tests;
