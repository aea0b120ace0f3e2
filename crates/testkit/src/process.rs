//! [`ChildGuard`]: a child process that is stopped with SIGTERM and waited for when dropped.
//!
//! SIGTERM rather than SIGKILL, so that the child shuts down as it would in service (the
//! server drains its connections; tauri-driver stops its WebKitWebDriver, which would otherwise
//! keep its port and be talked to by the next run). A child that is still running when the
//! timeout passes is left running and said so on stderr: killing it would hide the defect.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Owns a spawned child; on drop sends it SIGTERM and waits up to `timeout` for it to exit.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    what: String,
    timeout: Duration,
}

impl ChildGuard {
    /// Guards `child`; `what` names it in the message when it does not stop in `timeout`.
    pub fn new(child: Child, what: impl Into<String>, timeout: Duration) -> ChildGuard {
        ChildGuard {
            child,
            what: what.into(),
            timeout,
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself (to take its pipes, or see whether it is still running).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends SIGTERM and waits up to the timeout. True when the child has exited (it is then
    /// reaped); false when it is still running, which is also said on stderr.
    pub fn stop(&mut self) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return true;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    eprintln!(
                        "{} (pid {}) did not stop within {} s of SIGTERM; left running",
                        self.what,
                        self.child.id(),
                        self.timeout.as_secs_f64()
                    );
                    return false;
                }
                Err(e) => {
                    eprintln!("waiting for {} (pid {}): {e}", self.what, self.child.id());
                    return false;
                }
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn a_child_that_obeys_sigterm_is_stopped_and_reaped() {
        let child = Command::new("sleep")
            .arg("600")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut guard = ChildGuard::new(child, "sleep", Duration::from_secs(10));
        assert!(guard.stop());
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the child was not reaped"
        );
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_left_running_and_reported() {
        // The shell ignores TERM and keeps running until its stdin closes; it says when the
        // trap is set, so the signal cannot come first.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; read _"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready");
        let mut guard = ChildGuard::new(child, "a stubborn shell", Duration::from_millis(300));
        assert!(!guard.stop());
        assert!(matches!(guard.child_mut().try_wait(), Ok(None)));
        // Let it go: closing its stdin ends `read`.
        drop(guard.child_mut().stdin.take());
        assert!(guard.stop());
    }
}
