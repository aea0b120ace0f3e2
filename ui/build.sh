#!/bin/sh
# Builds the Doorstep UI into ui/dist, which the Tauri shell (src-tauri) embeds at compile time.
# `cargo xtask build-ui` does exactly the same; keep the two in step.
# Needs: the wasm32-unknown-unknown target, and wasm-bindgen-cli at the version pinned in
# ui/Cargo.toml (`cargo install wasm-bindgen-cli --version 0.2.130 --locked`).
set -eu
ui="$(cd "$(dirname "$0")" && pwd)"
cd "$ui"
cargo build --locked --target wasm32-unknown-unknown --release
rm -rf "$ui/dist"
mkdir -p "$ui/dist"
wasm-bindgen --target web --no-typescript --out-dir "$ui/dist" --out-name doorstep-ui \
  "$ui/target/wasm32-unknown-unknown/release/doorstep_ui.wasm"
cp "$ui/index.html" "$ui/style.css" "$ui/dist/"
echo "UI built into $ui/dist"
