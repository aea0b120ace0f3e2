//! Times the synthetic generator and prints counts, never patient data:
//! `cargo run --release -p doorstep-record --example generate_federation -- [practices] [patients per practice] [resources per patient]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use doorstep_record::synthetic::{FederationSpec, generate, patient_bundles};

/// Counts allocations, the cost that dominates building `serde_json` values.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers only"))
        .collect();
    let spec = FederationSpec {
        practices: *args.first().unwrap_or(&4),
        patients_per_practice: *args.get(1).unwrap_or(&250),
        resources_per_patient: *args.get(2).unwrap_or(&100),
        ..FederationSpec::default()
    };

    let started = Instant::now();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let fed = generate(&spec);
    let generated = started.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let resources: usize = fed
        .bundles
        .iter()
        .map(|b| b["entry"].as_array().map_or(0, Vec::len))
        .sum();
    let (practices, patients) = (fed.practices.len(), fed.patients.len());
    let dropping = Instant::now();
    drop(fed);
    let dropped = dropping.elapsed();
    println!(
        "generate: {practices} practices, {patients} patients, {resources} resources in {:.0} ms, {:.1} allocations per resource (freeing them: {:.0} ms)",
        generated.as_secs_f64() * 1000.0,
        allocations as f64 / resources as f64,
        dropped.as_secs_f64() * 1000.0
    );

    let started = Instant::now();
    let mut streamed = 0usize;
    for (_, bundle) in patient_bundles(&spec) {
        streamed += bundle["entry"].as_array().map_or(0, Vec::len);
    }
    println!(
        "patient_bundles (one at a time, each dropped after use): {streamed} resources in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
