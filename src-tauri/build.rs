//! Build script of the Doorstep shell: checks the UI is built, then runs `tauri-build` with an
//! app manifest so each of our commands gets an `allow-<command>` permission and nothing else
//! is callable from the window unless capabilities/main.json grants it.

use std::path::Path;

include!("src/command_names.rs");

fn main() {
    // The run-time value: a build script compiled in another clone sharing the target dir
    // must still check this clone's UI.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dist = Path::new(&manifest_dir).join("../ui/dist");
    println!("cargo:rerun-if-changed=../ui/dist");
    println!("cargo:rerun-if-changed=src/command_names.rs");
    if !dist.join("index.html").is_file() {
        panic!(
            "\n\nThe Doorstep UI is not built: {} is missing.\n\
             The shell embeds ui/dist at compile time. Build it first with\n\n    \
             cargo xtask build-ui\n\nthen build the shell again.\n\n",
            dist.join("index.html").display()
        );
    }
    let attributes = tauri_build::Attributes::new()
        .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(e) = tauri_build::try_build(attributes) {
        panic!("tauri-build failed: {e:#}");
    }
}
