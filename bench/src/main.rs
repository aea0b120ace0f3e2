//! Doorstep's benchmark suite: every performance budget of BENCHMARKS.md measured on the real
//! paths (the federation server over HTTPS on loopback with the dev CA, the sharing
//! agreements applied, a real SQLCipher cache, a real PostgreSQL where it says so).
//!
//! `cargo xtask bench` runs it in release mode and writes the figures into BENCHMARKS.md;
//! `cargo xtask bench --quick` (CI) runs every benchmark once at a small size, to show that
//! each still runs, and writes nothing. Nothing here fails on a time: a missed budget is
//! reported as missed, and the tests never assert times.
//!
//! The suites:
//!
//! * `sync`: a fresh device's initial sync of a caseload (about 100 resources a patient)
//!   against the floor (the same rows bulk-inserted straight into SQLCipher in one
//!   transaction, with the same indexes); the server's share of it (the pages fetched and
//!   decompressed, nothing applied); a sync with nothing new; a delta of 10 changed
//!   resources; the first sync of the next day (what moved look-back windows change); the
//!   cache's size on disk per patient.
//! * `search`: list searches over 10,000 cached patients and building one patient's record
//!   view (p95 of many runs each), and the same apply and search workload on SQLCipher
//!   against plain SQLite.
//! * `growth`: initial sync and search at 100, 1,000 and 10,000 patients, as a table and
//!   an SVG plot (`--plot`; `cargo xtask bench` writes `docs/bench/growth.svg`).
//! * `load`: the release server binary as a process of its own under 200 enrolled devices
//!   doing delta syncs and pushing notes for 60 s, on SQLite and on PostgreSQL through one
//!   node and two (see `load.rs`).
//! * `app`: the release app's cold start to the unlock screen under X, and the RSS of the app
//!   and its web view after opening 50 records (see `app.rs`).
//!
//! Every figure is printed as it is measured; the run ends with them as Markdown tables and
//! writes them, with their samples' sizes, to `--out` (JSON).

mod app;
mod figures;
mod fixture;
mod growth;
mod load;
mod search;
mod sync;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, ValueEnum};

use crate::figures::Report;

#[derive(Debug, Parser)]
#[command(about = "Doorstep's benchmarks (see BENCHMARKS.md)")]
struct Args {
    /// Which suites (all when none is named).
    #[arg(value_enum)]
    suites: Vec<Suite>,
    /// Run each benchmark once at a small size, only to show that it runs.
    #[arg(long)]
    quick: bool,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the figures as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the growth curves as an SVG plot here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    Sync,
    Search,
    Growth,
    Load,
    App,
}

const ALL: &[Suite] = &[
    Suite::Sync,
    Suite::Search,
    Suite::Growth,
    Suite::Load,
    Suite::App,
];

/// Sizes a run uses: the budgets' own, or small ones (`--quick`).
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub quick: bool,
}

impl Scale {
    /// `full` patients, or a tenth of a hundred when quick.
    pub fn patients(&self, full: usize) -> usize {
        if self.quick { full.min(30) } else { full }
    }

    /// `full` repetitions, or three when quick.
    pub fn runs(&self, full: usize) -> usize {
        if self.quick { full.min(3) } else { full }
    }
}

/// mimalloc rather than glibc's allocator: a pull builds and drops large JSON trees, and
/// glibc's slow paths (`malloc_consolidate`, `unlink_chunk`) took a third of its time
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let scale = Scale { quick: args.quick };
    let suites: Vec<Suite> = if args.suites.is_empty() {
        ALL.to_vec()
    } else {
        args.suites.clone()
    };
    let mut report = Report::default();
    for suite in suites {
        println!("== {suite:?}{}", if scale.quick { " (quick)" } else { "" });
        match suite {
            Suite::Sync => sync::run(scale, &mut report).await?,
            Suite::Search => search::run(scale, &mut report).await?,
            Suite::Growth => growth::run(scale, &mut report, args.plot.as_deref()).await?,
            Suite::Load => load::run(&mut report, scale).await?,
            Suite::App => app::run(&mut report, scale).await?,
        }
    }
    let markdown = report.markdown();
    println!("\n{markdown}");
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown)?;
    }
    Ok(())
}
