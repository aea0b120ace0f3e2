//! `cargo xtask` — the project's commands, written in Rust so they need nothing but cargo.
//!
//! * `cargo xtask demo`: install what is missing, build, seed a synthetic federation on the
//!   embedded store (once, under `demo-data/`), serve it over TLS with a local CA, print the
//!   demo sign-in and open the app pointed at it. `cargo xtask demo --postgres`: the same on
//!   a PostgreSQL cluster of the demo's own (`demo-data/postgres`, started with `pg_ctl` on a
//!   free loopback port, stopped when the demo ends).
//! * `cargo xtask test`: install what is missing, build the UI, then run every test of the
//!   workspace, the end-to-end ones (server + client over HTTPS, the app in a real window
//!   under Xvfb driven by tauri-driver, every screen in headless Chromium checked by axe-core)
//!   included. Tests that need PostgreSQL start throwaway clusters of their own
//!   (crates/testkit) from Debian's `postgresql` package.
//! * `cargo xtask build-ui`: build `ui/` to `ui/dist` (wasm32 + wasm-bindgen), which the shell
//!   embeds at compile time.
//! * `cargo xtask lint`: `cargo fmt --check` and clippy with warnings denied, on the workspace
//!   and on the UI, exactly as CI runs them (`.ci/run` is `cargo xtask test` then this).
//! * `cargo xtask deps`: only the install step.
//! * `cargo xtask bench [--quick] [SUITE...]`: build the benchmark binary, the server and the
//!   app in release, then run `doorstep-bench` (under Xvfb when there is no display, for the
//!   app suite's window): the figures go to `target/bench/figures.json` and `figures.md`;
//!   `--quick` runs every benchmark once at a small size and writes nothing (CI).
//!
//! The project root is found at run time (see [`project_root`]), never from the path this
//! binary was compiled in.
//!
//! Installing is idempotent and quick when everything is present: Debian packages (installed
//! with apt-get when running as root, otherwise the exact `apt-get` line is printed and the
//! command stops), the `wasm32-unknown-unknown` rustup target, `wasm-bindgen-cli` at the exact
//! version of `wasm-bindgen` in `ui/Cargo.lock` (the two must match or the UI will not load),
//! `tauri-driver`, the FHIR check's Python environment, and axe-core for the accessibility
//! check (npm, pinned, beside the build products).
//!
//! Every cargo step uses the same package selection and features (`--workspace`, default
//! features), so building for the tests and building for the demo share one set of artefacts.

use anyhow::{Context, Result, bail};
use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian packages the build and the tests need (python3-venv: the FHIR check's environment).
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
    "python3-venv",
    // The accessibility check: the UI in headless Chromium, driven through chromedriver.
    "chromium",
    "chromium-driver",
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
        Some("bench") => bench(&root, &args[1..]),
        Some("totp") => {
            let users = read_demo_users(&root.join("demo-data/server"))?;
            print_demo_users(&users, args.get(1).map(String::as_str));
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  demo [--postgres]  run the demo federation and the app (--postgres: on a local PostgreSQL it starts)\n  test       run every test (end-to-end included)\n  build-ui   build ui/ into ui/dist\n  deps       install what the build and tests need\n  lint       formatting and clippy, as CI runs them\n  bench [--quick] [SUITE...]  the benchmarks (--quick: each once, small, writes nothing)\n  totp [USER]  print the demo users' current TOTP codes"
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
    ensure_fhir_validator(root)?;
    ensure_axe(root)?;
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

/// The independent FHIR R4 check the tests run (tests/fhir/validate_bundle.py): the Python
/// library fhir.resources at this version (FHIR 4.0.1 models) with pydantic below 2, in a
/// virtual environment of its own beside the build products.
const FHIR_RESOURCES: &str = "fhir.resources==6.4.0";
const PYDANTIC: &str = "pydantic<2";

fn fhir_venv(root: &Path) -> PathBuf {
    target_dir(root).join("fhir-venv")
}

/// The Python of the FHIR check's virtual environment.
fn fhir_python(root: &Path) -> PathBuf {
    fhir_venv(root).join("bin/python")
}

fn ensure_fhir_validator(root: &Path) -> Result<()> {
    let python = fhir_python(root);
    let check = "import fhir.resources, pydantic; \
                 assert fhir.resources.__version__ == '6.4.0' and pydantic.VERSION < '2'";
    if python.is_file() && output_of(Command::new(&python).args(["-c", check])).is_some() {
        return Ok(());
    }
    let system = find_program("python3").context(
        "python3 is needed for the FHIR check of the tests (apt-get install python3 python3-venv)",
    )?;
    run(Command::new(system)
        .args(["-m", "venv"])
        .arg(fhir_venv(root)))?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        FHIR_RESOURCES,
        PYDANTIC,
    ]))
}

/// axe-core for the accessibility check (tests/tests/ui_accessibility.rs), at this exact
/// version, installed with npm into a directory of its own beside the build products.
const AXE_CORE_VERSION: &str = "4.14.1";

fn axe_dir(root: &Path) -> PathBuf {
    target_dir(root).join("axe")
}

/// The file the accessibility test injects into each page (`DOORSTEP_AXE_JS`).
fn axe_js(root: &Path) -> PathBuf {
    axe_dir(root).join("node_modules/axe-core/axe.min.js")
}

fn ensure_axe(root: &Path) -> Result<()> {
    let package = axe_dir(root).join("node_modules/axe-core/package.json");
    let installed = fs::read_to_string(&package)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    if installed.as_deref() == Some(AXE_CORE_VERSION) && axe_js(root).is_file() {
        return Ok(());
    }
    if find_program("npm").is_none() {
        // Debian's npm (with nodejs); a node from elsewhere that brings its own npm is fine.
        if !is_root() {
            bail!(
                "npm is needed to install axe-core for the accessibility check\nrun as root:\n  \
                 sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends npm'"
            );
        }
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends", "npm"]))?;
    }
    fs::create_dir_all(axe_dir(root))?;
    run(
        Command::new(find_program("npm").context("npm not found after installing it")?)
            .arg("install")
            .arg("--prefix")
            .arg(axe_dir(root))
            .args([
                "--no-audit",
                "--no-fund",
                "--save-exact",
                &format!("axe-core@{AXE_CORE_VERSION}"),
            ]),
    )
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
    // The window test needs an X display: give the whole run one under Xvfb when there is none,
    // tall enough for the tablet in portrait (800x1280).
    let mut cmd = if env::var_os("DISPLAY").is_none() {
        let mut c = Command::new("xvfb-run");
        c.args(["-a", "-s", "-screen 0 1280x1400x24"]);
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
    .env("DOORSTEP_FHIR_PYTHON", fhir_python(root))
    .env("DOORSTEP_AXE_JS", axe_js(root))
    .env("DOORSTEP_TEST_ARTIFACTS", root.join("tests/artifacts"));
    run(&mut cmd)?;
    // The UI's own unit tests (formatting, validation) run on the host.
    run(cargo()
        .current_dir(root.join("ui"))
        .env("CARGO_TARGET_DIR", ui_target_dir(root))
        .args(["test", "--locked"]))?;
    // Every benchmark once, small (the debug builds just made; no figures written): a
    // benchmark that no longer runs fails here rather than at the next measurement.
    run(bench_command(&target_dir(root).join("debug")).arg("--quick"))?;
    eprintln!(
        "xtask: every test passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The benchmarks (BENCHMARKS.md): release builds of the bench binary and of what its suites
/// start as processes (the server for `load`, the app for `app`), then the suites.
fn bench(root: &Path, extra: &[String]) -> Result<()> {
    let started = Instant::now();
    ensure_deps(root)?;
    build_ui(root)?;
    run(cargo().args([
        "build",
        "--release",
        "--locked",
        "-p",
        "doorstep-bench",
        "-p",
        "doorstep-server",
        "-p",
        "doorstep-app",
    ]))?;
    let quick = extra.iter().any(|a| a == "--quick");
    let mut cmd = bench_command(&target_dir(root).join("release"));
    cmd.args(extra);
    if !quick {
        let out = root.join("target/bench");
        fs::create_dir_all(&out)?;
        fs::create_dir_all(root.join("docs/bench"))?;
        cmd.arg("--json")
            .arg(out.join("figures.json"))
            .arg("--markdown")
            .arg(out.join("figures.md"))
            .arg("--plot")
            .arg(root.join("docs/bench/growth.svg"));
    }
    run(&mut cmd)?;
    eprintln!(
        "xtask: benchmarks ran in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `doorstep-bench` of `bin_dir` with the server and app binaries beside it, under Xvfb when
/// there is no display (the app suite opens a window).
fn bench_command(bin_dir: &Path) -> Command {
    let mut cmd = if env::var_os("DISPLAY").is_none() {
        let mut c = Command::new("xvfb-run");
        c.args(["-a", "-s", "-screen 0 1280x1400x24"]);
        c.arg(bin_dir.join("doorstep-bench"));
        c
    } else {
        Command::new(bin_dir.join("doorstep-bench"))
    };
    cmd.env("DOORSTEP_SERVER_BIN", bin_dir.join("doorstep-server"))
        .env("DOORSTEP_APP_BIN", bin_dir.join("doorstep-app"));
    cmd
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

fn demo(root: &Path, extra: &[String]) -> Result<()> {
    let postgres = match extra {
        [] => false,
        [flag] if flag == "--postgres" => true,
        other => bail!("usage: cargo xtask demo [--postgres] (not {other:?})"),
    };
    ensure_deps(root)?;
    build_ui(root)?;
    build_workspace()?;
    let bin = target_dir(root).join("debug");
    let server = bin.join("doorstep-server");
    let app = bin.join("doorstep-app");
    let data = root.join("demo-data");
    // The PostgreSQL demo keeps its own server directory: each store is seeded once.
    let (server_dir, cluster) = if postgres {
        let cluster = DemoCluster::start(&data.join("postgres"))?;
        (data.join("server-postgres"), Some(cluster))
    } else {
        (data.join("server"), None)
    };
    let database: Vec<String> = match &cluster {
        Some(c) => vec!["--database".into(), c.url.clone()],
        None => Vec::new(),
    };
    if !server_dir.join("demo-users.json").exists() {
        fs::create_dir_all(&server_dir)?;
        run(Command::new(&server)
            .args(["seed", "--demo", "--data-dir"])
            .arg(&server_dir)
            .args(&database))?;
    }
    let mut serving = ServerProcess::start(&server, &server_dir, &database)?;
    let users = read_demo_users(&server_dir)?;
    println!("\nDoorstep demo federation at {}", serving.url);
    if let Some(c) = &cluster {
        println!(
            "Store: PostgreSQL at {} (data in {}; stopped when the demo ends)",
            c.url,
            c.dir.display()
        );
    }
    println!(
        "CA certificate: {}",
        server_dir.join("dev-ca.pem").display()
    );
    println!(
        "Demo sign-in (synthetic users; codes change every 30 s: `cargo xtask totp` prints fresh ones):"
    );
    print_demo_users(&users, None);
    println!(
        "Console (for the staff users: receptionist, team leader, service manager, privacy officer): {}/console",
        serving.url
    );
    print_staff_users(&users);
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
    drop(cluster);
    // Closing the window, Ctrl-C or a kill are all ordinary ways to end the demo.
    if !status.success() && std::os::unix::process::ExitStatusExt::signal(&status).is_none() {
        bail!("the app exited with {status}");
    }
    Ok(())
}

/// The demo's own PostgreSQL cluster: persistent under `demo-data/postgres`, started with
/// `pg_ctl` on a free loopback port, stopped on drop. PostgreSQL refuses to run as root, so as
/// root its programs run as Debian's `postgres` user (through `runuser`), which owns the
/// cluster's directory.
struct DemoCluster {
    bin: PathBuf,
    dir: PathBuf,
    run_as: Option<&'static str>,
    url: String,
}

impl DemoCluster {
    fn start(dir: &Path) -> Result<DemoCluster> {
        let bin = pg_bin_dir().context(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql",
        )?;
        let run_as = is_root().then_some("postgres");
        let data = dir.join("data");
        fs::create_dir_all(dir)?;
        if let Some(user) = run_as {
            run(Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:{user}"))
                .arg(dir))?;
        }
        let path = |p: &Path| p.to_str().map(str::to_string).context("a non-UTF-8 path");
        if !data.join("PG_VERSION").exists() {
            run(&mut pg_command(
                run_as,
                &bin.join("initdb"),
                &[
                    "-D",
                    &path(&data)?,
                    "-U",
                    "doorstep",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
            ))
            .with_context(|| {
                format!(
                    "initdb in {} (as root, the postgres user must be able to reach it)",
                    data.display()
                )
            })?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {}", path(dir)?);
        run(&mut pg_command(
            run_as,
            &bin.join("pg_ctl"),
            &[
                "-D",
                &path(&data)?,
                "-o",
                &options,
                "-l",
                &path(&dir.join("server.log"))?,
                "-w",
                "-t",
                "60",
                "start",
            ],
        ))?;
        let cluster = DemoCluster {
            bin,
            dir: dir.to_path_buf(),
            run_as,
            url: format!("postgres://doorstep@127.0.0.1:{port}/doorstep"),
        };
        let psql = |sql: &str| {
            output_of(
                Command::new(cluster.bin.join("psql"))
                    .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", "doorstep"])
                    .args(["-p", &port.to_string(), "-d", "postgres", "-c", sql]),
            )
        };
        let exists = psql("SELECT 1 FROM pg_database WHERE datname = 'doorstep'")
            .context("psql could not reach the demo's PostgreSQL")?;
        if exists.trim() != "1" {
            psql("CREATE DATABASE doorstep").context("creating the doorstep database")?;
        }
        Ok(cluster)
    }
}

impl Drop for DemoCluster {
    fn drop(&mut self) {
        if let Some(data) = self.dir.join("data").to_str() {
            let _ = pg_command(
                self.run_as,
                &self.bin.join("pg_ctl"),
                &["-D", data, "-m", "fast", "-w", "stop"],
            )
            .status();
        }
    }
}

fn pg_command(run_as: Option<&str>, program: &Path, args: &[&str]) -> Command {
    let mut cmd = match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    // pg_ctl's server inherits stdout; a pipe would keep ours open.
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    cmd
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb, else initdb's directory on PATH.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .or_else(|| find_program("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
}

/// The federation server as a child process; stopped on drop.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(server: &Path, data_dir: &Path, database: &[String]) -> Result<Self> {
        let mut child = Command::new(server)
            .args([
                "serve",
                "--dev-tls",
                "--listen",
                "127.0.0.1:8443",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(database)
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

/// The staff among the demo users: the console's sign-ins, with what each role does there.
fn print_staff_users(users: &[serde_json::Value]) {
    for user in users {
        let field = |k: &str| user.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let does = match field("role") {
            "receptionist" => "books her practice's patients into sessions",
            "team_leader" => "adds, transfers and discharges caseload patients",
            "service_manager" => "publishes sessions, manages users and devices, reads the figures",
            "privacy_officer" => "answers break-glass alerts and access requests",
            _ => continue,
        };
        println!("  {:<16} {:<16} {does}", field("username"), field("role"));
    }
}

fn current_totp(secret: &str) -> Option<String> {
    let bytes = totp_rs::Secret::Encoded(secret.to_string())
        .to_bytes()
        .ok()?;
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes);
    totp.generate_current().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's cluster is made once, keeps its data across starts and stops on drop.
    #[test]
    fn the_demo_cluster_persists_across_starts_and_stops_on_drop() {
        if pg_bin_dir().is_none() {
            eprintln!("skipped: PostgreSQL is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("doorstep-xtask-pg-{}", std::process::id()));
        let psql = |c: &DemoCluster, sql: &str| {
            let port = c.url.rsplit(':').next().unwrap().split('/').next().unwrap();
            output_of(
                Command::new(c.bin.join("psql"))
                    .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", "doorstep"])
                    .args(["-p", port, "-d", "doorstep", "-c", sql]),
            )
        };
        let port = {
            let cluster = DemoCluster::start(&dir).unwrap();
            psql(
                &cluster,
                "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)",
            )
            .unwrap();
            cluster.url.clone()
        };
        let port = port
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err(),
            "the cluster still listens after drop"
        );
        let cluster = DemoCluster::start(&dir).unwrap();
        assert_eq!(psql(&cluster, "SELECT x FROM kept").unwrap().trim(), "7");
        drop(cluster);
        let _ = fs::remove_dir_all(&dir);
    }
}
