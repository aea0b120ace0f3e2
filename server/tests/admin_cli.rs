//! The administration commands of `doorstep-server`: `admin add`, `agreement
//! list|show|create|update|retire|compare`, `patient dissent`, `valueset load`, `user
//! add|disable|enable|unlock|reset-totp`, `device list|revoke`. A bad file is
//! refused naming the file and the field, and changes nothing; every change is audited as
//! `cli:USER` with its reason.

use std::path::Path;
use std::process::Command;

use doorstep_server::demo::{self, DemoSpec};
use doorstep_server::store::{self, DatabaseUrl};
use serde_json::json;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_doorstep-server"));
    c.env("RUST_LOG", "warn")
        .env("USER", "ops")
        .env_remove("DOORSTEP_DATA_DIR")
        .env_remove("DOORSTEP_DATABASE_URL");
    c
}

fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = bin()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

#[test]
fn agreements_dissent_and_value_sets_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    demo::seed_with_database(
        dir.path(),
        &database,
        &DemoSpec::small(5, chrono::Utc::now().date_naive()),
    )
    .unwrap();
    let snapshot = || {
        block_on(async {
            let s = store::open(&database).await.unwrap();
            (
                s.all_agreements().await.unwrap(),
                s.audit_rows().await.unwrap().len(),
                s.value_sets().await.unwrap(),
            )
        })
    };
    let (service, patient) = block_on(async {
        let s = store::open(&database).await.unwrap();
        (
            s.services().await.unwrap()[0].id.clone(),
            s.patients().await.unwrap()[0].clone(),
        )
    });
    let d = dir.path();
    let path = |name: &str| d.join(name).to_string_lossy().into_owned();

    // An administrator's credential, printed once.
    let (ok, out, _) = run(d, &["admin", "add", "ada"]);
    assert!(ok);
    assert!(out.contains("secret: dpa_"), "{out}");

    // A bad file: refused naming the file and the field; nothing changes.
    let before = snapshot();
    let mut file = json!({
        "id": "podiatry-2026", "name": "Podiatry", "service": service,
        "practices": [patient.practice_ods], "roles": ["podiatrist"],
        "sections": [{"section": "feet"}],
        "max_offline_hours": 72, "idle_lock_minutes": 5, "retention_days": 30,
        "purpose": "Direct care of feet", "legal_basis": "UK GDPR 6(1)(e), 9(2)(h)"
    });
    std::fs::write(path("bad.json"), file.to_string()).unwrap();
    let (ok, _, err) = run(
        d,
        &["agreement", "create", &path("bad.json"), "--reason", "new"],
    );
    assert!(!ok);
    assert!(
        err.contains(
            "bad.json: nothing was changed: sections[0].section: unknown section \"feet\""
        ),
        "{err}"
    );
    let (ok, _, err) = run(d, &["agreement", "create", &path("bad.json")]);
    assert!(!ok && err.contains("--reason"), "{err}");
    assert_eq!(snapshot(), before);

    // Create, update, show, compare, retire.
    file["sections"] =
        json!([{"section": "problems"}, {"section": "encounters", "lookback_days": 730}]);
    std::fs::write(path("podiatry.json"), file.to_string()).unwrap();
    let (ok, _, err) = run(
        d,
        &[
            "agreement",
            "create",
            &path("podiatry.json"),
            "--reason",
            "new service",
        ],
    );
    assert!(ok, "{err}");
    file["sections"] = json!([{"section": "problems"}]);
    std::fs::write(path("podiatry.json"), file.to_string()).unwrap();
    let (ok, _, err) = run(
        d,
        &[
            "agreement",
            "update",
            "podiatry-2026",
            &path("podiatry.json"),
            "--reason",
            "encounters not needed",
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("version 2"), "{err}");
    let (ok, out, _) = run(d, &["agreement", "show", "podiatry-2026"]);
    assert!(ok);
    assert!(
        out.contains("version 1 at") && out.contains("by cli:ops: new service"),
        "{out}"
    );
    assert!(
        out.contains("version 2 at") && out.contains("encounters not needed"),
        "{out}"
    );
    let (ok, out, _) = run(d, &["agreement", "list"]);
    assert!(ok && out.contains("podiatry-2026\tv2"), "{out}");
    let (ok, out, _) = run(d, &["agreement", "compare"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("section") && lines[0].contains("podiatry-2026 v2"),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.starts_with("problems")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("notes")), "{out}");
    let (ok, out, _) = run(d, &["agreement", "compare", "podiatry-2026", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sections"][1]["section"], "problems");
    assert_eq!(v["sections"][1]["cells"][0]["shared"], true);
    let (ok, _, err) = run(
        d,
        &[
            "agreement",
            "retire",
            "podiatry-2026",
            "--reason",
            "service closed",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        d,
        &["agreement", "retire", "podiatry-2026", "--reason", "again"],
    );
    assert!(!ok && err.contains("already retired"), "{err}");

    // Dissent by NHS number; an invalid number names the field.
    let (ok, _, err) = run(
        d,
        &[
            "patient",
            "dissent",
            "1234567890",
            "on",
            "--reason",
            "asked",
        ],
    );
    assert!(!ok && err.contains("nhs_number"), "{err}");
    let (ok, _, err) = run(
        d,
        &[
            "patient",
            "dissent",
            &patient.nhs_number,
            "on",
            "--reason",
            "asked",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        !err.contains(&patient.nhs_number),
        "no NHS number in the output"
    );
    let dissent = block_on(async {
        let s = store::open(&database).await.unwrap();
        s.patient(&patient.id).await.unwrap().unwrap().dissent
    });
    assert!(dissent);

    // A user's role.
    let (ok, _, err) = run(
        d,
        &[
            "user",
            "role",
            "nurse.demo",
            "Nurse Lead",
            "--reason",
            "promoted",
        ],
    );
    assert!(
        !ok && err.contains("role: \"Nurse Lead\" is not a role code"),
        "{err}"
    );
    let (ok, _, err) = run(
        d,
        &[
            "user",
            "role",
            "nurse.demo",
            "district-nurse",
            "--reason",
            "promoted",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(d, &["user", "role", "nobody", "gp", "--reason", "x"]);
    assert!(!ok && err.contains("no user nobody"), "{err}");

    // Value sets: a bad one names the field, a good one loads.
    let before = snapshot();
    std::fs::write(
        path("bad-set.json"),
        json!({"resourceType": "ValueSet", "url": "https://x.example/vs",
               "compose": {"include": [{"concept": [{"code": "44054006"}]}]}})
        .to_string(),
    )
    .unwrap();
    let (ok, _, err) = run(
        d,
        &[
            "valueset",
            "load",
            &path("bad-set.json"),
            "--reason",
            "local",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("bad-set.json: nothing was changed: compose.include[0].system"),
        "{err}"
    );
    assert_eq!(snapshot(), before);
    std::fs::write(
        path("set.json"),
        json!({"resourceType": "ValueSet", "url": "https://x.example/vs", "status": "active",
               "compose": {"include": [{"system": "http://snomed.info/sct",
                                        "concept": [{"code": "44054006"}]}]}})
        .to_string(),
    )
    .unwrap();
    let (ok, _, err) = run(
        d,
        &["valueset", "load", &path("set.json"), "--reason", "local"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("1 code(s)"), "{err}");

    let rows = block_on(async {
        let s = store::open(&database).await.unwrap();
        s.audit_rows().await.unwrap()
    });
    doorstep_server::audit::verify(&rows).unwrap();
    let cli: Vec<&str> = rows
        .iter()
        .filter(|r| r.event.actor == "cli:ops")
        .map(|r| r.event.action.as_str())
        .collect();
    assert_eq!(
        cli,
        vec![
            "admin_credential_issued",
            "agreement_created",
            "agreement_updated",
            "agreement_retired",
            "dissent_set",
            "user_role_set",
            "value_set_loaded"
        ]
    );
}

/// `user add|disable|enable|unlock|reset-totp` and `device list|revoke`: each audited as
/// `cli:ops` with its reason; a sign-in printed once works; a command without a reason, or
/// `user add` without the data directory that holds the TOTP key, changes nothing.
#[test]
fn users_and_devices_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    demo::seed_with_database(
        dir.path(),
        &database,
        &DemoSpec::small(5, chrono::Utc::now().date_naive()),
    )
    .unwrap();
    let service = block_on(async {
        let s = store::open(&database).await.unwrap();
        s.user_by_username("nurse.demo")
            .await
            .unwrap()
            .unwrap()
            .service_id
    });
    let add = [
        "user",
        "add",
        "sam.okafor",
        "--name",
        "Sam Okafor",
        "--role",
        "nurse",
        "--service",
        &service,
    ];

    // Without a reason, or without --data-dir (the TOTP key's directory), nothing is added.
    let (ok, _, err) = run(dir.path(), &add);
    assert!(!ok);
    assert!(err.contains("--reason"), "{err}");
    let out = bin()
        .args(add)
        .args(["--reason", "new starter", "--database"])
        .arg(format!(
            "sqlite:{}",
            dir.path().join("federation.db").display()
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--data-dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (ok, out, err) = run(
        dir.path(),
        &[&add[..], &["--reason", "new starter"]].concat(),
    );
    assert!(ok, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let (password, secret) = (field("password"), field("totp secret"));
    let check = doorstep_server::totp_key::TotpKey::load_or_create(dir.path()).unwrap();
    let sam = block_on(async {
        let s = store::open(&database).await.unwrap();
        s.user_by_username("sam.okafor").await.unwrap().unwrap()
    });
    assert!(doorstep_server::auth::verify_password(
        &sam.password_hash,
        &password
    ));
    assert_eq!(check.open("sam.okafor", &sam.totp_secret).unwrap(), secret);

    // A receptionist is a user of a member practice: without one, with a stranger's, or for
    // another role, `--practice` is refused naming the field; with one it is stored.
    let practice = block_on(async {
        let s = store::open(&database).await.unwrap();
        s.practices().await.unwrap()[0].ods.clone()
    });
    let receptionist = |name: &str, role: &str, practice: Option<&str>| {
        let mut args: Vec<&str> = vec![
            "user",
            "add",
            name,
            "--name",
            "Front Desk",
            "--role",
            role,
            "--service",
            &service,
            "--reason",
            "new starter",
        ];
        if let Some(p) = practice {
            args.extend(["--practice", p]);
        }
        run(dir.path(), &args)
    };
    for (role, given, says) in [
        (
            "receptionist",
            None,
            "practice: a receptionist is a user of a practice",
        ),
        (
            "receptionist",
            Some("Z99999"),
            "practice: Z99999 is not a member practice",
        ),
        (
            "nurse",
            Some(practice.as_str()),
            "practice: only a receptionist",
        ),
    ] {
        let (ok, _, err) = receptionist("desk.one", role, given);
        assert!(!ok && err.contains(says), "{role} {given:?}: {err}");
    }
    let (ok, _, err) = receptionist("desk.one", "receptionist", Some(&practice.to_lowercase()));
    assert!(ok, "{err}");
    let desk = block_on(async {
        let s = store::open(&database).await.unwrap();
        s.user_by_username("desk.one").await.unwrap().unwrap()
    });
    assert_eq!(desk.practice_ods.as_deref(), Some(practice.as_str()));

    for (args, expect) in [
        (
            vec!["user", "disable", "sam.okafor", "--reason", "left"],
            "is disabled",
        ),
        (
            vec!["user", "enable", "sam.okafor", "--reason", "back"],
            "is enabled",
        ),
        (
            vec!["user", "unlock", "sam.okafor", "--reason", "rang"],
            "is unlocked",
        ),
    ] {
        let (ok, _, err) = run(dir.path(), &args);
        assert!(ok && err.contains(expect), "{args:?}: {err}");
    }
    let (ok, _, err) = run(
        dir.path(),
        &["user", "enable", "sam.okafor", "--reason", "x"],
    );
    assert!(!ok && err.contains("nothing was changed"), "{err}");
    let (ok, out, err) = run(
        dir.path(),
        &["user", "reset-totp", "sam.okafor", "--reason", "phone"],
    );
    assert!(ok, "{err}");
    let new_secret = out
        .trim()
        .strip_prefix("totp secret: ")
        .unwrap()
        .to_string();
    assert_ne!(new_secret, secret);

    // A device, then listed and revoked.
    let device = block_on(async {
        let s = store::open(&database).await.unwrap();
        s.create_device(&sam.id, "Ward tablet", chrono::Utc::now())
            .await
            .unwrap()
    });
    let (ok, out, _) = run(dir.path(), &["device", "list"]);
    assert!(ok);
    let line = out.lines().find(|l| l.starts_with(&device)).unwrap();
    assert!(line.contains("sam.okafor") && line.contains("Ward tablet") && line.ends_with('-'));
    let (ok, _, err) = run(
        dir.path(),
        &["device", "revoke", &device, "--reason", "stolen"],
    );
    assert!(ok, "{err}");
    let (ok, out, _) = run(dir.path(), &["device", "list"]);
    assert!(
        ok && !out
            .lines()
            .find(|l| l.starts_with(&device))
            .unwrap()
            .ends_with('-')
    );

    let audited: Vec<(String, String, String)> = block_on(async {
        let s = store::open(&database).await.unwrap();
        s.audit_rows().await.unwrap()
    })
    .into_iter()
    .filter(|r| r.event.actor == "cli:ops")
    .map(|r| {
        (
            r.event.action,
            r.event.detail["user"].as_str().unwrap_or_default().into(),
            r.event.detail["reason"].as_str().unwrap_or_default().into(),
        )
    })
    .collect();
    let e = |a: &str, r: &str| (a.to_string(), "sam.okafor".to_string(), r.to_string());
    assert_eq!(
        audited,
        vec![
            e("user_added", "new starter"),
            // The receptionist: only the accepted addition is audited, the refused ones not.
            (
                "user_added".to_string(),
                "desk.one".to_string(),
                "new starter".to_string()
            ),
            e("user_disabled", "left"),
            e("user_enabled", "back"),
            e("user_unlocked", "rang"),
            e("user_totp_reset", "phone"),
            e("device_revoked", "stolen"),
        ]
    );
}
