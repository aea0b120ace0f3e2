//! Killing the `doorstep` process with SIGKILL in the middle of a push, and in the middle of
//! applying a page, loses nothing and duplicates nothing (issue 7, hazard H5 lost note).
//!
//! A federation is served over HTTPS in this process; the built `doorstep` binary runs `sync`
//! as a child, with its debug markers on stderr ("pushing", "push answered", "applying page",
//! "page applied": counts only, no patient data). Each round writes one or two notes on the
//! device (through the library, as the app does), changes the nurse's agreement on some rounds
//! (so the next pull is a must-resync and a whole rebuild: many pages to apply), starts a sync
//! and kills it:
//! - *push*: a random moment after the push went out (the server may or may not have stored
//!   the notes, and the answer may or may not have reached the outbox);
//! - *apply*: a random moment after a page started being applied (inside or after its
//!   transaction);
//! - *any*: a random moment since the process started (unlock and sign-in included).
//!
//! Afterwards one sync runs to the end, and the test checks against the server's store:
//! every note written is accepted exactly once (one Composition each, none extra), nothing
//! waits, the device was never signed out, and the cache is exactly what a fresh device of the
//! same user receives. The seed is printed; `DOORSTEP_KILL_SEED` replays a run and
//! `DOORSTEP_KILL_ROUNDS` changes the number of kills.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use doorstep_client::{Device, EnrolParams, NoteInput};
use doorstep_ipc::NoteState;
use doorstep_server::demo::{DemoSpec, NURSING_SERVICE, read_demo_users, seed_with};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::store::{DatabaseUrl, Store};
use doorstep_testkit::device::{cache_view, compositions};
use doorstep_testkit::totp_code;

const PIN: &str = "135790";

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moment {
    Push,
    Apply,
    Any,
}

/// Where the child was, by the last marker it printed before the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Starting,
    Pushing,
    Pushed,
    Applying,
    Applied,
}

fn phase_of(line: &str) -> Option<Phase> {
    // Longest first: "push answered" also contains "push".
    if line.contains("push answered") {
        Some(Phase::Pushed)
    } else if line.contains("pushing") {
        Some(Phase::Pushing)
    } else if line.contains("page applied") {
        Some(Phase::Applied)
    } else if line.contains("applying page") {
        Some(Phase::Applying)
    } else {
        None
    }
}

/// `doorstep sync` as a child whose stderr lines come through a channel.
fn spawn_sync(dir: &Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_doorstep"))
        .args(["sync"])
        .env("DOORSTEP_DATA_DIR", dir)
        .env("DOORSTEP_PIN", PIN)
        .env("DOORSTEP_LOG", "doorstep_client=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start doorstep sync");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// What came of one round.
#[derive(Debug)]
enum Round {
    Killed(Phase),
    /// The sync ended (successfully or not) before the moment came.
    Finished(bool),
}

/// Kills that must land inside a push, and inside a page's apply.
const MID_PHASE_KILLS: usize = 5;

/// Run one sync and kill it at `moment` (after a further random delay below `delay_ms`).
fn sync_and_kill(dir: &Path, moment: Moment, delay_ms: u64, rng: &mut Rng) -> Round {
    let started = Instant::now();
    let (mut child, lines) = spawn_sync(dir);
    let mut phase = Phase::Starting;
    let deadline = match moment {
        Moment::Any => Some(started + Duration::from_millis(rng.below(delay_ms))),
        _ => None,
    };
    let mut armed: Option<Instant> = deadline;
    loop {
        if let Some(at) = armed
            && Instant::now() >= at
        {
            break;
        }
        match lines.recv_timeout(Duration::from_millis(1)) {
            Ok(line) => {
                if let Some(p) = phase_of(&line) {
                    phase = p;
                    let hit = matches!(
                        (moment, p),
                        (Moment::Push, Phase::Pushing) | (Moment::Apply, Phase::Applying)
                    );
                    if hit && armed.is_none() {
                        armed = Some(
                            Instant::now() + Duration::from_micros(rng.below(delay_ms * 1000)),
                        );
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("wait for doorstep");
                return Round::Finished(status.success());
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("doorstep sync ran for two minutes");
        }
    }
    // Drain what was printed up to the kill, for the phase.
    child.kill().expect("SIGKILL doorstep");
    let status = child.wait().expect("reap doorstep");
    if status.success() {
        // It had exited by itself just before the signal (its stderr not yet closed): the
        // sync finished, nothing was killed.
        return Round::Finished(true);
    }
    while let Ok(line) = lines.try_recv() {
        if let Some(p) = phase_of(&line) {
            phase = p;
        }
    }
    Round::Killed(phase)
}

/// Change the nurse's agreement in a way that changes nothing she sees but her access epoch:
/// her next pull is a must-resync and a whole rebuild.
async fn bump_agreement(store: &dyn Store, round: u64) {
    let mut agreements = store.agreements_for_service(NURSING_SERVICE).await.unwrap();
    let a = agreements.first_mut().expect("the nursing agreement");
    a.name = format!("Riverside practices and district nursing (revision {round})");
    store.put_agreement(a, Utc::now()).await.unwrap();
}

fn unlock(dir: &Path) -> Device {
    Device::unlock(dir, PIN).expect("the device unlocks: it was never signed out or broken")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_push_and_mid_apply_loses_and_duplicates_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seed = std::env::var("DOORSTEP_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64 | 1);
    let kills_wanted: usize = std::env::var("DOORSTEP_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!("sigkill: seed {seed} (DOORSTEP_KILL_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    // A federation whose nurse has a caseload big enough that a rebuild is several pages.
    let server_dir = tempfile::tempdir().unwrap();
    let mut spec = DemoSpec::small(13, Utc::now().date_naive());
    spec.federation.patients_per_practice = 14;
    spec.federation.resources_per_patient = 60;
    spec.caseload = 24;
    let sp = server_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || seed_with(&sp, &spec))
        .await
        .unwrap()
        .expect("seed");
    let nurse = read_demo_users(server_dir.path())
        .unwrap()
        .into_iter()
        .find(|u| u.username == "nurse.demo")
        .unwrap();
    let mut config = ServeConfig::new(server_dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = TlsMode::Dev;
    let server = start(config).await.expect("server");
    let store = doorstep_server::store::open(&DatabaseUrl::in_data_dir(server_dir.path()))
        .await
        .expect("the federation's store, beside the server");
    let enrol = |offset: u64, name: &str| EnrolParams {
        server_url: server.base_url.clone(),
        ca_pem_path: Some(server.ca_pem_path.clone()),
        username: nurse.username.clone(),
        password: nurse.password.as_str().into(),
        totp: totp_code(&nurse.totp_secret, offset).into(),
        pin: PIN.into(),
        device_name: name.into(),
        dev_mode: false,
    };

    let device_dir = tempfile::tempdir().unwrap();
    let dir: PathBuf = device_dir.path().to_path_buf();
    let device = Device::enrol(&dir, enrol(0, "tablet killed 60 times"))
        .await
        .expect("enrol");
    device.sync().await.expect("first sync");
    let patients: Vec<String> = device
        .list(None, doorstep_client::today())
        .unwrap()
        .into_iter()
        .map(|r| r.patient_id)
        .collect();
    assert!(patients.len() >= 20, "caseload: {}", patients.len());
    let before = compositions(store.as_ref(), &patients).await;
    drop(device);

    // How long one whole rebuild takes here, for the "any moment" kills.
    bump_agreement(store.as_ref(), 0).await;
    let t = Instant::now();
    assert!(matches!(
        sync_and_kill(&dir, Moment::Push, 0, &mut rng),
        Round::Finished(true)
    ));
    let full_ms = (t.elapsed().as_millis() as u64).max(50);
    eprintln!("sigkill: an uninterrupted rebuild takes {full_ms} ms");

    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut kills: BTreeMap<Phase, usize> = BTreeMap::new();
    let mut finished = 0usize;
    let mut round = 0u64;
    let started = Instant::now();
    // Until enough kills, and enough of them inside a push and inside a page's apply: where
    // they land depends on how long each phase takes on the machine (after the server grew
    // faster, a push was often answered before a kill 0-40 ms after its start).
    let inside = |kills: &BTreeMap<Phase, usize>, phase| kills.get(&phase).copied().unwrap_or(0);
    while kills.values().sum::<usize>() < kills_wanted
        || inside(&kills, Phase::Pushing) < MID_PHASE_KILLS
        || inside(&kills, Phase::Applying) < MID_PHASE_KILLS
    {
        round += 1;
        assert!(
            round < kills_wanted as u64 * 3,
            "too few rounds reached their moment"
        );
        let device = unlock(&dir);
        for _ in 0..=rng.below(2) {
            let patient = &patients[rng.below(patients.len() as u64) as usize];
            let note = device
                .write_note(
                    patient,
                    NoteInput {
                        text: format!("Visit, round {round}: dressing changed, healing well."),
                        ..NoteInput::default()
                    },
                )
                .expect("write a note");
            written.insert(note.id);
        }
        drop(device);
        let moment = match round % 3 {
            0 => Moment::Push,
            1 => Moment::Apply,
            _ => Moment::Any,
        };
        if moment != Moment::Push || rng.below(2) == 0 {
            bump_agreement(store.as_ref(), round).await;
        }
        let delay_ms = match moment {
            // A push on loopback is answered in a few ms.
            Moment::Push => 8,
            Moment::Apply => 60,
            Moment::Any => full_ms,
        };
        let d = dir.clone();
        let mut r = Rng(rng.next() | 1);
        let outcome =
            tokio::task::spawn_blocking(move || sync_and_kill(&d, moment, delay_ms, &mut r))
                .await
                .unwrap();
        match outcome {
            Round::Killed(phase) => *kills.entry(phase).or_default() += 1,
            Round::Finished(ok) => {
                assert!(ok, "round {round}: an uninterrupted sync failed");
                finished += 1;
            }
        }
    }
    eprintln!(
        "sigkill: {round} rounds in {:?}: kills by last marker {kills:?}, {finished} syncs \
         finished first, {} notes written",
        started.elapsed(),
        written.len()
    );
    let mid_push = inside(&kills, Phase::Pushing);
    let mid_apply = inside(&kills, Phase::Applying);
    assert!(
        mid_push >= MID_PHASE_KILLS && mid_apply >= MID_PHASE_KILLS,
        "the kills must land inside pushes and page applies: {kills:?}"
    );

    // One sync to the end, as the next time the nurse has signal.
    let device = unlock(&dir);
    device.sync().await.expect("the last sync completes");
    let status = device.status().unwrap();
    assert_eq!(status.waiting, 0, "nothing waits: {status:?}");
    assert_eq!(status.rebuilding_since, None, "the rebuild completed");

    // Every note exactly once on the server: one Composition each, none extra.
    let after = compositions(store.as_ref(), &patients).await;
    let new: BTreeMap<&String, &usize> = after
        .iter()
        .filter(|(id, _)| !before.contains_key(*id))
        .collect();
    let on_server: BTreeSet<String> = new.keys().map(|s| s.to_string()).collect();
    let lost: Vec<&String> = written.difference(&on_server).collect();
    let extra: Vec<&String> = on_server.difference(&written).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "the server holds exactly the notes written: {} lost {lost:?}, {} unexpected {extra:?}",
        lost.len(),
        extra.len()
    );
    assert!(new.values().all(|n| **n == 1));
    for id in &written {
        let row = store.note(id).await.unwrap().expect("stored");
        assert_eq!(
            row.outcome,
            doorstep_server::store::rows::NoteOutcome::Accepted
        );
    }
    // And the device says so for each.
    let notes = device.notes(None).unwrap();
    assert_eq!(
        notes.iter().map(|n| n.id.clone()).collect::<BTreeSet<_>>(),
        written
    );
    for n in &notes {
        assert!(
            matches!(n.state, NoteState::Accepted { .. }),
            "note {}: {:?}",
            n.id,
            n.state
        );
    }

    // The cache converged: a fresh device of the same user sees the same.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Device::enrol(fresh_dir.path(), enrol(30, "fresh tablet"))
        .await
        .expect("enrol a fresh device (the first was never revoked)");
    fresh.sync().await.expect("fresh sync");
    let (mine, theirs) = (cache_view(&device), cache_view(&fresh));
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (patient, view) in &mine {
        assert_eq!(view, &theirs[patient], "patient {patient}");
    }
    server.shutdown().await;
}
