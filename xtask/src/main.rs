//! `cargo xtask` — the project's commands, written in Rust so they need nothing but cargo.
//!
//! * `cargo xtask demo`: install what is missing, build, seed a synthetic federation on the
//!   embedded store (once, under `demo-data/`), serve it over TLS with a local CA, print the
//!   demo sign-in and open the app pointed at it.
//! * `cargo xtask test`: install what is missing, build the UI, then run every test of the
//!   workspace, the end-to-end ones (server + client over HTTPS, the app in a real window
//!   under Xvfb driven by tauri-driver) included.
//! * `cargo xtask build-ui`: build `ui/` to `ui/dist` (wasm32 + wasm-bindgen), which the shell
//!   embeds at compile time.
//! * `cargo xtask lint`: `cargo fmt --check` and clippy with warnings denied, on the workspace
//!   and on the UI, exactly as CI runs them (`.ci/run` is `cargo xtask test` then this).
//! * `cargo xtask deps`: only the install step.
//!
//! The project root is found at run time (see [`project_root`]), never from the path this
//! binary was compiled in.
//!
//! Installing is idempotent and quick when everything is present: Debian packages (installed
//! with apt-get when running as root, otherwise the exact `apt-get` line is printed and the
//! command stops), the `wasm32-unknown-unknown` rustup target, `wasm-bindgen-cli` at the exact
//! version of `wasm-bindgen` in `ui/Cargo.lock` (the two must match or the UI will not load),
//! and `tauri-driver`.
//!
//! Every cargo step uses the same package selection and features (`--workspace`, default
//! features), so building for the tests and building for the demo share one set of artefacts.

use anyhow::{Context, Result, bail};
use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian packages the build and the tests need.
const APT_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "file",
    "libwebkit2gtk-4.1-dev",
    "libgtk-3-dev",
    "librsvg2-dev",
    "libsoup-3.0-dev",
    "libssl-dev",
    "libxdo-dev",
    "libayatana-appindicator3-dev",
    "xvfb",
    "xauth",
    "webkit2gtk-driver",
    "imagemagick",
    // The server's production store: tests start throwaway clusters (crates/testkit).
    "postgresql",
];

const TAURI_DRIVER_VERSION: &str = "2.1.0";

fn main() -> std::process::ExitCode {
    // `{:#}` prints the cause chain on one line; a failed step needs no backtrace.
    match run_command() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_command() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let root = project_root()?;
    env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("test") => test(&root, &args[1..]),
        Some("demo") => demo(&root, &args[1..]),
        Some("build-ui") => {
            ensure_deps(&root)?;
            build_ui(&root)
        }
        Some("deps") => ensure_deps(&root),
        Some("lint") => lint(&root),
        Some("totp") => {
            let users = read_demo_users(&root.join("demo-data/server"))?;
            print_demo_users(&users, args.get(1).map(String::as_str));
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  demo       run the demo federation and the app\n  test       run every test (end-to-end included)\n  build-ui   build ui/ into ui/dist\n  deps       install what the build and tests need\n  lint       formatting and clippy, as CI runs them\n  totp [USER]  print the demo users' current TOTP codes"
            );
            std::process::exit(2);
        }
    }
}

/// The root of the clone this command was run in, found at run time: `cargo run` tells the
/// binary its package's directory, else the current directory is searched upwards. Never the
/// compile-time path: with one target directory shared by two clones, a binary built in one
/// clone would otherwise build and test the other.
fn project_root() -> Result<PathBuf> {
    if let Some(xtask_dir) = env::var_os("CARGO_MANIFEST_DIR") {
        let root = PathBuf::from(xtask_dir)
            .parent()
            .map(Path::to_path_buf)
            .context("CARGO_MANIFEST_DIR has no parent")?;
        if is_project_root(&root) {
            return Ok(root);
        }
    }
    let cwd = env::current_dir().context("reading the current directory")?;
    cwd.ancestors()
        .find(|dir| is_project_root(dir))
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "{} is not inside a Doorstep clone (no Cargo.toml with xtask/ beside it)",
                cwd.display()
            )
        })
}

fn is_project_root(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file() && dir.join("xtask/Cargo.toml").is_file()
}

/// The workspace target dir (respects CARGO_TARGET_DIR, as CI sets it outside the clone).
fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output_of(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Finds a program on PATH or in cargo's bin dir.
fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(cargo_bin_dir());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// Installing what is missing

fn ensure_deps(root: &Path) -> Result<()> {
    let started = Instant::now();
    ensure_apt_packages()?;
    ensure_wasm_target()?;
    ensure_wasm_bindgen(root)?;
    ensure_tauri_driver()?;
    eprintln!(
        "xtask: dependencies present ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn missing_apt_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !output_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect()
}

fn ensure_apt_packages() -> Result<()> {
    let missing = missing_apt_packages();
    if missing.is_empty() {
        return Ok(());
    }
    let line = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        bail!(
            "these Debian packages are missing: {}\nrun as root:\n  sudo sh -c '{line}'",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))?;
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let installed = output_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    if installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// The wasm-bindgen version the UI is locked to (ui/Cargo.lock).
fn locked_wasm_bindgen_version(root: &Path) -> Result<String> {
    let lock = fs::read_to_string(root.join("ui/Cargo.lock"))
        .context("reading ui/Cargo.lock (the UI's lockfile is committed)")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            return Ok(v.trim_matches('"').to_string());
        }
    }
    bail!("ui/Cargo.lock has no wasm-bindgen package")
}

fn ensure_wasm_bindgen(root: &Path) -> Result<()> {
    let want = locked_wasm_bindgen_version(root)?;
    if let Some(bin) = find_program("wasm-bindgen") {
        let have = output_of(Command::new(&bin).arg("--version")).unwrap_or_default();
        if have.split_whitespace().nth(1) == Some(want.as_str()) {
            return Ok(());
        }
        eprintln!("xtask: {} is {}, need {want}", bin.display(), have.trim());
    }
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &want, "--force"]))
}

fn ensure_tauri_driver() -> Result<()> {
    if find_program("tauri-driver").is_some() {
        return Ok(());
    }
    run(cargo().args([
        "install",
        "tauri-driver",
        "--version",
        TAURI_DRIVER_VERSION,
        "--locked",
    ]))
}

// ---------------------------------------------------------------------------------------------
// Building

fn build_ui(root: &Path) -> Result<()> {
    let ui = root.join("ui");
    let ui_target = ui_target_dir(root);
    run(cargo()
        .current_dir(&ui)
        .env("CARGO_TARGET_DIR", &ui_target)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-unknown-unknown",
        ]))?;
    let dist = ui.join("dist");
    fs::create_dir_all(&dist)?;
    let wasm = ui_target.join("wasm32-unknown-unknown/release/doorstep_ui.wasm");
    let wasm_bindgen = find_program("wasm-bindgen").context("wasm-bindgen not found")?;
    run(Command::new(wasm_bindgen)
        .args([
            "--target",
            "web",
            "--no-typescript",
            "--out-name",
            "doorstep-ui",
        ])
        .arg("--out-dir")
        .arg(&dist)
        .arg(&wasm))?;
    for file in ["index.html", "style.css"] {
        fs::copy(ui.join(file), dist.join(file))
            .with_context(|| format!("copying ui/{file} into ui/dist"))?;
    }
    Ok(())
}

/// The UI is its own workspace; its build products go beside the workspace's.
fn ui_target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(|_| target_dir(root).join("ui"))
        .unwrap_or_else(|| root.join("ui/target"))
}

fn build_workspace() -> Result<()> {
    run(cargo().args(["build", "--workspace", "--all-targets", "--locked"]))
}

// ---------------------------------------------------------------------------------------------
// Commands

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let started = Instant::now();
    ensure_deps(root)?;
    build_ui(root)?;
    build_workspace()?;
    // The window test needs an X display: give the whole run one under Xvfb when there is none.
    let mut cmd = if env::var_os("DISPLAY").is_none() {
        let mut c = Command::new("xvfb-run");
        c.args(["-a", "-s", "-screen 0 1280x800x24"]);
        c.arg(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c
    } else {
        cargo()
    };
    cmd.args([
        "test",
        "--workspace",
        "--all-targets",
        "--locked",
        "--no-fail-fast",
    ])
    .args(extra)
    .env("DOORSTEP_E2E_REQUIRED", "1")
    .env("DOORSTEP_TEST_ARTIFACTS", root.join("tests/artifacts"));
    run(&mut cmd)?;
    // The UI's own unit tests (formatting, validation) run on the host.
    run(cargo()
        .current_dir(root.join("ui"))
        .env("CARGO_TARGET_DIR", ui_target_dir(root))
        .args(["test", "--locked"]))?;
    eprintln!(
        "xtask: every test passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Formatting and lints of the workspace and of the UI (its own workspace, built for wasm32).
fn lint(root: &Path) -> Result<()> {
    let started = Instant::now();
    ensure_wasm_target()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo()
        .current_dir(root.join("ui"))
        .args(["fmt", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo()
        .current_dir(root.join("ui"))
        .env("CARGO_TARGET_DIR", ui_target_dir(root))
        .args([
            "clippy",
            "--locked",
            "--target",
            "wasm32-unknown-unknown",
            "--",
            "-D",
            "warnings",
        ]))?;
    eprintln!(
        "xtask: formatting and lints clean ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn demo(root: &Path, _extra: &[String]) -> Result<()> {
    ensure_deps(root)?;
    build_ui(root)?;
    build_workspace()?;
    let bin = target_dir(root).join("debug");
    let server = bin.join("doorstep-server");
    let app = bin.join("doorstep-app");
    let data = root.join("demo-data");
    let server_dir = data.join("server");
    if !server_dir.join("demo-users.json").exists() {
        fs::create_dir_all(&server_dir)?;
        run(Command::new(&server)
            .args(["seed", "--demo", "--data-dir"])
            .arg(&server_dir))?;
    }
    let mut serving = ServerProcess::start(&server, &server_dir)?;
    let users = read_demo_users(&server_dir)?;
    println!("\nDoorstep demo federation at {}", serving.url);
    println!(
        "CA certificate: {}",
        server_dir.join("dev-ca.pem").display()
    );
    println!(
        "Demo sign-in (synthetic users; codes change every 30 s: `cargo xtask totp` prints fresh ones):"
    );
    print_demo_users(&users, None);
    println!(
        "The app's own data lives in {}.",
        data.join("app").display()
    );
    println!("Close the window to stop the demo.\n");
    let status = Command::new(&app)
        .arg("--data-dir")
        .arg(data.join("app"))
        .arg("--server")
        .arg(&serving.url)
        .arg("--ca")
        .arg(server_dir.join("dev-ca.pem"))
        .status()
        .context("starting the app")?;
    serving.stop();
    // Closing the window, Ctrl-C or a kill are all ordinary ways to end the demo.
    if !status.success() && std::os::unix::process::ExitStatusExt::signal(&status).is_none() {
        bail!("the app exited with {status}");
    }
    Ok(())
}

/// The federation server as a child process; stopped on drop.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(server: &Path, data_dir: &Path) -> Result<Self> {
        let mut child = Command::new(server)
            .args([
                "serve",
                "--dev-tls",
                "--listen",
                "127.0.0.1:8443",
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting doorstep-server")?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("doorstep-server listening on ") {
                        let url = url.trim().to_string();
                        // Keep draining stdout so the server never blocks on a full pipe.
                        std::thread::spawn(move || for _ in lines.by_ref() {});
                        return Ok(Self { child, url });
                    }
                }
                _ => break,
            }
        }
        let _ = child.kill();
        bail!("doorstep-server did not say where it listens (is port 8443 taken?)")
    }

    fn stop(&mut self) {
        // SIGTERM lets the server finish its in-flight requests.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Demo sign-in

fn read_demo_users(server_dir: &Path) -> Result<Vec<serde_json::Value>> {
    let path = server_dir.join("demo-users.json");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("reading {} (run `cargo xtask demo` first)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a JSON list", path.display()))
}

fn print_demo_users(users: &[serde_json::Value], only: Option<&str>) {
    println!(
        "  {:<12} {:<24} {:<10} {:<6} TOTP secret",
        "user", "password", "role", "code"
    );
    for user in users {
        let field = |k: &str| user.get(k).and_then(|v| v.as_str()).unwrap_or("");
        if only.is_some_and(|name| name != field("username")) {
            continue;
        }
        let code = current_totp(field("totp_secret")).unwrap_or_else(|| "?".into());
        println!(
            "  {:<12} {:<24} {:<10} {:<6} {}",
            field("username"),
            field("password"),
            field("role"),
            code,
            field("totp_secret")
        );
    }
}

fn current_totp(secret: &str) -> Option<String> {
    let bytes = totp_rs::Secret::Encoded(secret.to_string())
        .to_bytes()
        .ok()?;
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes);
    totp.generate_current().ok()
}
