//! The server and the device over real HTTPS: the federation server runs in this process on a
//! random loopback port with its development CA; the device library enrols against it (pinning
//! that CA), syncs the district nurse's caseload, reads records, loses a patient when her list
//! entry ends, and keeps working from its encrypted cache when the server is gone.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::Utc;
use doorstep_client::{ClientError, Device, EnrolParams, today};
use doorstep_e2e::DemoFederation;
use doorstep_ipc::IpcErrorKind;
use doorstep_record::NhsNumber;
use doorstep_server::demo::CASELOAD_LIST;
use doorstep_server::store::ListStore;
use doorstep_server::store::sqlite::SqliteStore;

const PIN: &str = "246810";

/// The patients the server has on the nurses' caseload now.
async fn caseload_on_server(store: &SqliteStore) -> BTreeSet<String> {
    let now = Utc::now();
    store
        .list_entries(CASELOAD_LIST)
        .await
        .expect("caseload entries")
        .into_iter()
        .filter(|e| e.is_active(now))
        .map(|e| e.patient_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_sync_read_purge_and_read_offline() {
    let demo = DemoFederation::start().await;
    let nurse = demo.user("nurse.demo");
    let device_dir = tempfile::tempdir().unwrap();

    // Enrol over HTTPS, trusting only the federation's CA.
    let device = Device::enrol(
        device_dir.path(),
        demo.enrol_params(&nurse, 0, PIN, "e2e laptop"),
    )
    .await
    .expect("enrol");
    assert_eq!(device.user().username, "nurse.demo");
    assert_eq!(device.user().role, nurse.role);
    assert_eq!(
        std::fs::read(device_dir.path().join("server-ca.pem")).unwrap(),
        std::fs::read(&demo.server.ca_pem_path).unwrap(),
        "the server's CA is copied and pinned"
    );
    assert!(device.device_file().pinned_ca);

    // The initial sync brings exactly the caseload the server has.
    let started = Instant::now();
    let report = device.sync().await.expect("initial sync");
    let took = started.elapsed();
    let store = SqliteStore::open(demo.data_dir.path()).expect("open the server's store");
    let expected = caseload_on_server(&store).await;
    eprintln!(
        "initial sync of the demo caseload: {} patients, {} pages, {} ms (wall {took:?})",
        report.patients, report.pages, report.duration_ms
    );
    assert!(
        expected.len() >= 20,
        "demo caseload too small: {}",
        expected.len()
    );
    let today = today();
    let rows = device.list(None, today).expect("list");
    let cached: BTreeSet<String> = rows.iter().map(|r| r.patient_id.clone()).collect();
    assert_eq!(
        cached, expected,
        "the cache holds exactly the server's caseload"
    );
    assert_eq!(report.patients as usize, expected.len());
    assert!(rows.iter().all(|r| r.list_kind == "caseload"));
    assert!(rows.iter().all(|r| NhsNumber::parse(&r.nhs_number).is_ok()));

    // A record opens, with allergies in it and an Allergies badge on the list.
    let (row, record) = rows
        .iter()
        .find_map(|r| {
            let rec = device.record(&r.patient_id, today).unwrap()?;
            (!rec.view.allergies.is_empty()).then(|| (r.clone(), rec))
        })
        .expect("a caseload patient with allergies");
    assert!(
        row.alerts.iter().any(|a| a == "Allergies"),
        "{:?}",
        row.alerts
    );
    assert_eq!(
        record.view.patient.nhs_number.as_deref(),
        Some(row.nhs_number.as_str())
    );
    assert!(!record.view.allergies[0].substance.is_empty());
    assert!(record.as_of <= Utc::now());
    assert!(!record.list_reason.is_empty());

    // Search finds her by NHS number (spaced) and by family name.
    let by_nhs = device
        .list(Some(&row.nhs_number_display), today)
        .expect("search by NHS number");
    assert_eq!(by_nhs.len(), 1);
    assert_eq!(by_nhs[0].patient_id, row.patient_id);
    let family = record.view.patient.family.clone();
    assert!(
        device
            .list(Some(&family), today)
            .unwrap()
            .iter()
            .any(|r| r.patient_id == row.patient_id)
    );
    let nhs = NhsNumber::parse(&row.nhs_number).unwrap();
    assert_eq!(
        device.find_patient(&nhs).unwrap().as_deref(),
        Some(row.patient_id.as_str())
    );

    // Nothing changed: a second sync applies nothing new.
    let again = device.sync().await.expect("second sync");
    assert_eq!(again.patients_added, 0);
    assert_eq!(again.patients_removed, 0);

    // The nurse discharges another patient: at the next sync she leaves the device.
    let leaving = rows
        .iter()
        .find(|r| r.patient_id != row.patient_id)
        .expect("a second patient")
        .clone();
    let ended = store
        .end_list_entry(CASELOAD_LIST, &leaving.patient_id, Utc::now())
        .await
        .expect("end the list entry");
    assert_eq!(ended, 1);
    let report = device.sync().await.expect("sync after discharge");
    assert_eq!(report.patients_removed, 1);
    assert!(device.record(&leaving.patient_id, today).unwrap().is_none());
    let after: BTreeSet<String> = device
        .list(None, today)
        .unwrap()
        .into_iter()
        .map(|r| r.patient_id)
        .collect();
    assert_eq!(after, caseload_on_server(&store).await);
    assert!(!after.contains(&leaving.patient_id));
    assert!(
        device
            .list(Some(&leaving.nhs_number), today)
            .unwrap()
            .is_empty()
    );
    let status = device.status().unwrap();
    assert_eq!(status.server_reachable, Some(true));
    assert_eq!(status.patients as usize, after.len());
    let last_synced = status.last_synced.expect("last synced");

    // The server goes away. Sync fails as offline; the record still opens from the cache,
    // after a lock and unlock too.
    drop(store);
    demo.stop_server().await;
    let e = device.sync().await.expect_err("no server");
    assert!(matches!(e, ClientError::Offline(_)), "{e:?}");
    assert_eq!(e.to_ipc().kind, IpcErrorKind::Offline);
    drop(device);

    let device = Device::unlock(device_dir.path(), PIN).expect("unlock offline");
    let offline = device
        .record(&row.patient_id, today)
        .unwrap()
        .expect("the record opens offline");
    assert_eq!(offline.view.allergies, record.view.allergies);
    assert!(!device.probe_server().await);
    let status = device.status().unwrap();
    assert_eq!(status.server_reachable, Some(false));
    assert_eq!(status.last_synced, Some(last_synced));
    assert!(status.last_error.is_some());
    assert_eq!(
        device.list(None, today).unwrap().len(),
        after.len(),
        "the whole list is there offline"
    );

    // A wrong PIN is told apart from everything else.
    drop(device);
    match Device::unlock(device_dir.path(), "000000") {
        Err(ClientError::WrongPin { remaining }) => assert_eq!(remaining, 4),
        other => panic!("expected WrongPin, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_refuses_a_wrong_code_and_an_untrusted_server() {
    let demo = DemoFederation::start().await;
    let nurse = demo.user("nurse.demo");
    let device_dir = tempfile::tempdir().unwrap();
    let params = demo.enrol_params(&nurse, 0, PIN, "e2e");

    // A wrong password: the server's refusal, in its words, as SignInFailed.
    let e = Device::enrol(
        device_dir.path(),
        EnrolParams {
            password: "not the password".into(),
            ..params.clone()
        },
    )
    .await
    .expect_err("wrong password");
    assert_eq!(e.to_ipc().kind, IpcErrorKind::SignInFailed, "{e}");
    assert!(!doorstep_client::is_enrolled(device_dir.path()));

    // Without the federation's CA, enrolment is refused outside development mode...
    let e = Device::enrol(
        device_dir.path(),
        EnrolParams {
            ca_pem_path: None,
            ..params.clone()
        },
    )
    .await
    .expect_err("no pinned CA");
    assert_eq!(e.to_ipc().kind, IpcErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("--insecure-dev"), "{e}");
    // ...and in it, the platform's roots do not trust the federation's own CA.
    let e = Device::enrol(
        device_dir.path(),
        EnrolParams {
            ca_pem_path: None,
            dev_mode: true,
            ..params.clone()
        },
    )
    .await
    .expect_err("untrusted certificate");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    assert!(!doorstep_client::is_enrolled(device_dir.path()));
}

/// Five wrong PINs shut the cache until the nurse signs in online; signing in again (real
/// password and TOTP over HTTPS) keeps the device's id, its cache and the note waiting in its
/// outbox, replaces its tokens and needs no rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_pins_then_an_online_sign_in_keeps_the_cache_and_the_outbox() {
    let demo = DemoFederation::start().await;
    let nurse = demo.user("nurse.demo");
    let dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(dir.path(), demo.enrol_params(&nurse, 0, PIN, "tablet"))
        .await
        .expect("enrol");
    device.sync().await.expect("first sync");
    let patients = device.list(None, today()).unwrap();
    let note = device
        .write_note(
            &patients[0].patient_id,
            doorstep_client::NoteInput {
                text: "Written before the PIN was forgotten.".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let device_id = device.device_file().device_id.clone();
    drop(device);

    for _ in 0..5 {
        assert!(Device::unlock(dir.path(), "975310").is_err());
    }
    let Err(e) = Device::unlock(dir.path(), PIN) else {
        panic!("the cache opened after five wrong PINs")
    };
    assert!(
        matches!(e, ClientError::OnlineSignInRequired { .. }),
        "{e:?}"
    );
    assert_eq!(e.to_ipc().kind, IpcErrorKind::OnlineSignInRequired);

    // A wrong password is refused by the server and opens nothing.
    let Err(e) = Device::unlock_after_sign_in(
        dir.path(),
        PIN,
        "not the password",
        &doorstep_e2e::totp_for(&nurse.totp_secret, 0),
    )
    .await
    else {
        panic!("a wrong password opened the cache")
    };
    assert!(matches!(e, ClientError::SignInFailed(_)), "{e:?}");
    assert!(Device::unlock(dir.path(), PIN).is_err(), "still shut");

    // The right password and the next TOTP step's code (the enrolment used this one's).
    let device = Device::unlock_after_sign_in(
        dir.path(),
        PIN,
        &nurse.password,
        &doorstep_e2e::totp_for(&nurse.totp_secret, 30),
    )
    .await
    .expect("signed in again");
    assert_eq!(device.device_file().device_id, device_id, "the same device");
    assert_eq!(
        device.list(None, today()).unwrap(),
        patients,
        "the cache kept"
    );
    assert_eq!(device.status().unwrap().waiting, 1, "the note still waits");
    let report = device.sync().await.expect("sync with the new tokens");
    assert!(
        !report.rebuilt,
        "the cursor is still the device's: no rebuild"
    );
    assert_eq!(report.pushed.accepted, 1);
    assert!(
        device
            .notes(None)
            .unwrap()
            .iter()
            .any(|n| n.id == note.id && matches!(n.state, doorstep_ipc::NoteState::Accepted { .. }))
    );
    drop(device);
    // The PIN alone opens it again: the count was reset.
    Device::unlock(dir.path(), PIN).expect("unlock with the PIN");
}

/// A record opened on the device while the server is out of reach is audited with the
/// device's own time and "offline" once the device syncs again, and appears in the patient's
/// access report (issue 10); a view made online says so too. Record views do not count as
/// notes waiting, and leave the outbox once accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_opened_offline_is_in_the_access_report_after_the_next_sync() {
    let demo = DemoFederation::start().await;
    let nurse = demo.user("nurse.demo");
    let device_dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(
        device_dir.path(),
        demo.enrol_params(&nurse, 0, PIN, "e2e laptop"),
    )
    .await
    .expect("enrol");
    device.sync().await.expect("initial sync");
    let rows = device.list(None, today()).unwrap();
    let patient = rows[0].clone();

    device
        .record_viewed(&patient.patient_id, "summary")
        .expect("an online view");
    let report = device.sync().await.expect("the online view goes up");
    assert_eq!(
        report.pushed.accepted,
        1,
        "{:?}",
        device.status().unwrap().last_push_error
    );

    demo.stop_server().await;
    assert!(device.sync().await.is_err(), "the server is gone");
    let offline_at = Utc::now();
    device
        .record_viewed(&patient.patient_id, "medications")
        .expect("an offline view");
    assert_eq!(
        device.status().unwrap().waiting,
        0,
        "record views are not notes waiting"
    );
    assert!(matches!(
        device.record_viewed(&patient.patient_id, "Medications; DROP"),
        Err(ClientError::Invalid(_))
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    demo.restart_server().await;
    let report = device.sync().await.expect("sync after signal returns");
    assert_eq!(
        (report.pushed.accepted, report.pushed.waiting),
        (1, 0),
        "the offline view goes up: {:?}",
        device.status().unwrap().last_push_error
    );
    let store = demo.store().await;
    let report = doorstep_server::access::patient_report(store.as_ref(), &patient.nhs_number, None)
        .await
        .expect("the access report");
    let views: Vec<_> = report
        .accesses
        .iter()
        .filter(|a| a.action == "record_viewed")
        .collect();
    assert_eq!(views.len(), 2, "{:#?}", report.accesses);
    let online = views.iter().find(|a| a.what.contains("(summary)")).unwrap();
    assert_eq!(online.offline, Some(false));
    let offline = views
        .iter()
        .find(|a| a.what.contains("(medications)"))
        .unwrap();
    assert_eq!(offline.offline, Some(true));
    assert!(offline.what.ends_with("offline"), "{}", offline.what);
    assert!(
        (offline.at - offline_at).num_seconds().abs() <= 1,
        "the view keeps the device's time: {} vs {offline_at}",
        offline.at
    );
    assert!(
        offline.recorded_at > offline.at,
        "and says when the server learnt of it"
    );
    assert_eq!(
        offline.device_id.as_deref(),
        Some(device.device_file().device_id.as_str())
    );
    assert!(offline.who.contains("Nia Evans"), "{}", offline.who);
    // Sent once: a second sync sends nothing more.
    device.sync().await.expect("another sync");
    let again = doorstep_server::access::patient_report(store.as_ref(), &patient.nhs_number, None)
        .await
        .unwrap();
    assert_eq!(
        again
            .accesses
            .iter()
            .filter(|a| a.action == "record_viewed")
            .count(),
        2
    );
}

/// The server revokes the device (as `doorstep-server device revoke` does, through the
/// store): its next contact is answered 403 `device_revoked`, and the device wipes its cache,
/// tokens and waiting note, and says why, at that sync and at every unlock after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_on_the_server_wipes_at_its_next_sync() {
    let demo = DemoFederation::start().await;
    let nurse = demo.user("nurse.demo");
    let dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(dir.path(), demo.enrol_params(&nurse, 0, PIN, "lost laptop"))
        .await
        .expect("enrol");
    device.sync().await.expect("initial sync");
    let patients = device.list(None, today()).unwrap();
    assert!(!patients.is_empty());
    device
        .write_note(
            &patients[0].patient_id,
            doorstep_client::NoteInput {
                text: "written before the revocation".into(),
                ..Default::default()
            },
        )
        .unwrap();

    demo.store()
        .await
        .revoke_device(&device.device_file().device_id, Utc::now())
        .await
        .expect("revoke the device");

    let e = device.sync().await.unwrap_err();
    assert!(matches!(e, ClientError::DeviceRevoked), "{e:?}");
    assert_eq!(e.to_ipc().kind, IpcErrorKind::DeviceRevoked);
    for name in ["cache.db", "cache.db-wal", "cache.db-shm"] {
        assert!(
            !dir.path().join(name).exists(),
            "{name} left after the wipe"
        );
    }
    assert!(matches!(
        device.list(None, today()),
        Err(ClientError::DeviceRevoked)
    ));
    drop(device);
    let e = Device::unlock(dir.path(), PIN).unwrap_err();
    assert!(matches!(e, ClientError::DeviceRevoked), "{e:?}");
    // Nothing of a patient is left in the data directory.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let raw = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&raw);
        for p in &patients {
            assert!(!text.contains(&p.nhs_number), "an NHS number is left");
        }
    }
}
