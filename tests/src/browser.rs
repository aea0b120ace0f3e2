//! A real Chromium for the tests that look at pages: headless Chromium driven by chromedriver
//! (Debian's `chromium`, `chromium-driver`) through fantoccini, axe-core injected to check
//! WCAG 2.0/2.1/2.2 A and AA, reflow measured, screenshots saved. Shared by the UI's
//! accessibility check (`tests/ui_accessibility.rs`) and the console's
//! (`tests/console_in_chromium.rs`).
//!
//! What is missing (chromedriver, Chromium, axe-core) makes [`Browser::needs`] say why and
//! answer `None`; under `DOORSTEP_E2E_REQUIRED` (`cargo xtask test`) it panics instead.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The axe tags checked: WCAG 2.0, 2.1 and 2.2 at levels A and AA.
pub const AXE_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];

/// How long a wait for an element lasts.
pub const WAIT: Duration = Duration::from_secs(10);

/// What a browser test needs here.
pub struct Needs {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
    pub axe: PathBuf,
}

impl Needs {
    /// chromedriver, Chromium and axe-core, with `more` (other things the test needs: a
    /// path and what provides it), or None with the reason printed (a panic under
    /// `DOORSTEP_E2E_REQUIRED`). `what` names the test in the message.
    pub fn find(what: &str, more: &[(PathBuf, &str)]) -> Option<Needs> {
        let chromedriver = which("chromedriver");
        // Debian's /usr/bin/chromium is a shell wrapper; the browser is beside its libraries.
        let chromium = ["/usr/lib/chromium/chromium"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| which("chromium"));
        let axe = axe_js();
        let mut missing = Vec::new();
        if chromedriver.is_none() {
            missing.push("chromedriver (apt-get install chromium-driver)".to_owned());
        }
        if chromium.is_none() {
            missing.push("Chromium (apt-get install chromium)".to_owned());
        }
        if !axe.is_file() {
            missing.push(format!(
                "axe-core at {} (cargo xtask deps installs it; or set DOORSTEP_AXE_JS)",
                axe.display()
            ));
        }
        for (path, provider) in more {
            if !path.exists() {
                missing.push(format!("{} ({provider})", path.display()));
            }
        }
        if missing.is_empty() {
            return Some(Needs {
                chromedriver: chromedriver?,
                chromium: chromium?,
                axe,
            });
        }
        let why = format!("{what} cannot run: missing {}", missing.join(", "));
        if doorstep_testkit::e2e_required() {
            panic!("{why}");
        }
        eprintln!("{why}; `cargo xtask test` provides them");
        None
    }

    pub fn axe_source(&self) -> String {
        std::fs::read_to_string(&self.axe).expect("read axe.min.js")
    }
}

/// `DOORSTEP_AXE_JS`, else where `cargo xtask deps` installs axe-core: `axe/` in the target
/// directory the test binary was built in (target/<profile>/deps/<test>).
pub fn axe_js() -> PathBuf {
    if let Some(path) = std::env::var_os("DOORSTEP_AXE_JS") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's path");
    exe.ancestors()
        .nth(3)
        .unwrap_or(Path::new("."))
        .join("axe/node_modules/axe-core/axe.min.js")
}

/// The clone the tests run in (at run time: a binary built in another clone tests this one).
pub fn project_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `$DOORSTEP_TEST_ARTIFACTS`, default `tests/artifacts/`, made if missing.
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("DOORSTEP_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("tests/artifacts"));
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// chromedriver on a free loopback port, in a process group of its own with the Chromium it
/// starts; on drop the group gets SIGTERM (chromedriver alone would leave a browser behind when
/// the session was not closed, as after a panic), and chromedriver is killed only if it does
/// not go.
pub struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    pub fn start(program: &Path) -> Chromedriver {
        let port = doorstep_testkit::free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Chromedriver { child, port }
    }

    /// A headless Chromium session, with `extra` arguments (a certificate to trust).
    pub async fn connect(&self, chromium: &Path, extra: &[String]) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut args: Vec<String> = [
            "--headless=new",
            // As root (CI) Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--force-device-scale-factor=1",
            "--window-size=1280,800",
            "--lang=en-GB",
            "--no-first-run",
            "--disable-extensions",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(extra);
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromedriver session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium's `--ignore-certificate-errors-spki-list` value trusting exactly the certificates
/// of the PEM file(s) given (base64 SHA-256 of each one's SubjectPublicKeyInfo): the honest
/// way to let the browser reach a server with a test CA's certificate, nothing else.
pub fn spki_hashes(pem_files: &[&Path]) -> String {
    let mut hashes = Vec::new();
    for file in pem_files {
        let text = std::fs::read_to_string(file).expect("read a PEM certificate");
        let b64: String = text
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("a base64 certificate");
        let spki = spki_of(&der).expect("a certificate's SubjectPublicKeyInfo");
        hashes.push(base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki)));
    }
    hashes.join(",")
}

/// One DER element at the start of `der`: (its tag, its whole bytes, its contents).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        let mut len = 0usize;
        for b in der.get(2..2 + n)? {
            len = (len << 8) | *b as usize;
        }
        (len, 2 + n)
    };
    let whole = der.get(..head + len)?;
    Some((tag, whole, &whole[head..]))
}

/// The SubjectPublicKeyInfo of an X.509 certificate: the 7th element of the TBS certificate
/// (after the optional `[0]` version).
fn spki_of(cert: &[u8]) -> Option<&[u8]> {
    let (_, _, cert) = der_element(cert)?;
    let (_, _, mut tbs) = der_element(cert)?;
    let mut index = 0;
    while !tbs.is_empty() {
        let (tag, whole, _) = der_element(tbs)?;
        if index == 0 && tag != 0xa0 {
            // No version element: v1.
            index = 1;
        }
        if index == 6 {
            return Some(whole);
        }
        tbs = &tbs[whole.len()..];
        index += 1;
    }
    None
}

pub async fn wait_for(client: &Client, css: &str) -> Result<fantoccini::elements::Element, String> {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("{css} did not appear: {e}"))
}

/// Wait until an element matching `css` shows `text` (`""`: any displayed element).
pub async fn see(client: &Client, css: &str, text: &str) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    let mut last = Vec::new();
    loop {
        last.clear();
        for el in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
            let shown = el.text().await.unwrap_or_default();
            if shown.contains(text)
                && (!text.is_empty() || el.is_displayed().await.unwrap_or(false))
            {
                return Ok(());
            }
            last.push(shown);
        }
        if Instant::now() > deadline {
            return Err(format!("no {css} shows {text:?} (seen: {last:?})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `n` elements match `css`.
pub async fn count(client: &Client, css: &str, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0);
        if found == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{found} elements match {css}, not {n}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A viewport of `width` x `height` CSS pixels at scale 1.
pub fn metrics(width: u32, height: u32) -> Value {
    json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false})
}

/// Injects axe (once per document, as WebDriver script), waits two frames for layout, runs it, and answers each
/// violation as one line: rule, impact, help and the targets of its nodes.
pub async fn run_axe(client: &Client, axe: &str) -> Vec<String> {
    let present = client
        .execute("return !!window.axe;", vec![])
        .await
        .expect("look for axe");
    if present != json!(true) {
        // Run as WebDriver script (not a <script> element): a page whose CSP allows no
        // script (the console's) still gets it, and its own policy stays as it is.
        client
            .execute(&format!("{axe}\nreturn !!window.axe;"), vec![])
            .await
            .expect("inject axe");
    }
    let answer = client
        .execute(
            "const tags = arguments[0];
             await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
             const result = await axe.run(document, {
               runOnly: { type: 'tag', values: tags },
               resultTypes: ['violations'],
             });
             return result.violations.map(v => ({
               id: v.id, impact: v.impact, help: v.help,
               targets: v.nodes.map(n => n.target.join(' ')),
             }));",
            vec![json!(AXE_TAGS)],
        )
        .await
        .expect("axe.run");
    let Value::Array(found) = answer else {
        panic!("axe answered {answer}");
    };
    found
        .iter()
        .map(|v| {
            let targets: Vec<&str> = v["targets"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!(
                "{} ({}): {} [{}]",
                v["id"].as_str().unwrap_or("?"),
                v["impact"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or("?"),
                targets.join(", ")
            )
        })
        .collect()
}

/// Reflow (WCAG 1.4.10, which axe does not check): the page and its main area (`#main`)
/// never scroll sideways; a wide table may scroll within its own region.
pub async fn sideways(client: &Client) -> Option<String> {
    let answer = client
        .execute(
            "const w = document.documentElement.clientWidth;
             const main = document.getElementById('main');
             const page = document.scrollingElement.scrollWidth > w + 1;
             const inner = main && main.scrollWidth > main.clientWidth + 1;
             if (!page && !inner) return null;
             const limit = main ? main.getBoundingClientRect().right : w;
             const wide = Array.from(document.querySelectorAll('#main *'))
               .filter(e => e.getBoundingClientRect().right > limit + 1)
               .slice(0, 5)
               .map(e => e.id ? '#' + e.id : e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : ''));
             return wide.join(', ') || 'the page';",
            vec![],
        )
        .await
        .expect("measure the page's width");
    answer
        .as_str()
        .map(|wide| format!("reflow (1.4.10): the page scrolls sideways [{wide}]"))
}

pub async fn save_screenshot(client: &Client, path: &Path) -> Result<(), String> {
    let png = client
        .screenshot()
        .await
        .map_err(|e| format!("screenshot: {e}"))?;
    std::fs::write(path, png).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A Chrome DevTools Protocol command through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}

pub async fn cdp(client: &Client, cmd: &'static str, params: Value) {
    client
        .issue_cmd(Cdp { cmd, params })
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spki_of_a_generated_certificate_is_found() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let spki = spki_of(cert.der()).unwrap();
        // A "PUBLIC KEY" PEM is the SubjectPublicKeyInfo.
        let pem: String = key
            .public_key_pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let expected = base64::engine::general_purpose::STANDARD
            .decode(pem)
            .unwrap();
        assert_eq!(spki, expected);
    }
}
