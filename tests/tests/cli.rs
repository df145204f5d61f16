//! The operators' CLI against a running node: `urpnet-node ticket ...` as a
//! real process, tables by default and JSON with `--json`.

use std::process::Output;

use urpnet_tests::{Backend, TestNode, binary};

async fn cli(node: &TestNode, args: &[&str]) -> Output {
    let endpoint = node.desk_addr.to_string();
    let out = tokio::process::Command::new(binary("urpnet-node"))
        .args(["--config", "/nonexistent/urpnet.toml", "ticket"])
        .args(args)
        .args(["--endpoint", &endpoint, "--token", &node.token])
        .env_remove("URPNET_CONFIG")
        .output()
        .await
        .expect("run urpnet-node");
    assert!(
        out.status.success(),
        "urpnet-node ticket {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_work_a_ticket_from_the_command_line() {
    let node = TestNode::start("c_a662", Backend::Sqlite, "cli")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("buca.jpg");
    std::fs::write(&photo, [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]).unwrap();

    let photo = photo.to_str().unwrap();
    let create = [
        "create",
        "--category",
        "strade.buche",
        "--channel",
        "phone",
        "--subject",
        "Buca in corso Cavour",
        "--istat",
        "072006",
        "--address",
        "Corso Cavour 52",
        "--lat",
        "41.1231",
        "--lon",
        "16.8718",
        "--attach",
        photo,
        "--citizen-name",
        "Maria Rossi",
        "--request-id",
        "cli-test-0001",
    ];
    let created = json(&cli(&node, &[&create[..], &["--json"]].concat()).await);
    let reference = created["ticket"]["reference"].as_str().unwrap().to_string();
    assert!(reference.starts_with("c_a662-"), "{created}");
    assert_eq!(created["ticket"]["channel"], "CHANNEL_PHONE");
    assert_eq!(
        created["ticket"]["attachments"][0]["mediaType"],
        "image/jpeg"
    );

    // The same request id again: the same ticket, said in words.
    let again = text(&cli(&node, &create).await);
    assert!(
        again.contains(&format!("{reference} already created (same request id)")),
        "{again}"
    );

    cli(&node, &["assign", &reference, "ufficio-manutenzioni"]).await;
    cli(&node, &["status", &reference, "in_progress"]).await;
    cli(&node, &["note", &reference, "Squadra inviata", "--public"]).await;
    let shown = json(&cli(&node, &["show", &reference, "--json"]).await);
    assert_eq!(shown["ticket"]["status"], "STATUS_IN_PROGRESS");
    assert_eq!(shown["ticket"]["office"], "ufficio-manutenzioni");
    assert_eq!(shown["citizen"]["fullName"], "Maria Rossi");

    let table = text(&cli(&node, &["show", &reference]).await);
    assert!(
        table.contains("in_progress") && table.contains("Bari (BA) 072006"),
        "{table}"
    );

    let list = json(
        &cli(
            &node,
            &[
                "list",
                "--json",
                "--status",
                "in_progress",
                "--territory",
                "272",
            ],
        )
        .await,
    );
    assert_eq!(list.as_array().unwrap().len(), 1);
    let listed = text(&cli(&node, &["list", "--text", "cavour"]).await);
    assert!(
        listed.contains(&reference) && listed.contains("1 ticket(s)"),
        "{listed}"
    );

    let history = json(&cli(&node, &["history", &reference, "--json"]).await);
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert!(
        entries
            .iter()
            .all(|e| e["effective"] == true && e["signatureValid"] == true),
        "{history}"
    );
    let table = text(&cli(&node, &["history", &reference]).await);
    assert!(
        table.contains("public note") && table.contains("assigned -> in_progress"),
        "{table}"
    );

    // A refusal is one readable line on stderr and a failing exit code.
    let refused = tokio::process::Command::new(binary("urpnet-node"))
        .args([
            "ticket",
            "status",
            &reference,
            "closed",
            "--endpoint",
            &node.desk_addr.to_string(),
            "--token",
            &node.token,
        ])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("InvalidArgument")
            && err.contains("status: may not change from in_progress to closed"),
        "{err}"
    );
    node.stop().await;
}

async fn charter_cli(node: &TestNode, args: &[&str]) -> Output {
    let endpoint = node.desk_addr.to_string();
    tokio::process::Command::new(binary("urpnet-node"))
        .args(["--config", "/nonexistent/urpnet.toml", "charter"])
        .args(["--endpoint", &endpoint, "--token", &node.token])
        .args(args)
        .env_remove("URPNET_CONFIG")
        .output()
        .await
        .expect("run urpnet-node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charter_is_imported_explained_and_signed_from_the_command_line() {
    let node = TestNode::start("c_c426", Backend::Sqlite, "cli_charter")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sample = include_str!("../../examples/charters/celano.toml");
    // A file with two errors: nothing published, both located.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        sample
            .replacen("legal_days = 45", "legal_days = 0", 1)
            .replacen("\"lun-ven 08:30-12:30\"", "\"lun-vem 08:30-12:30\"", 1),
    )
    .unwrap();
    let out = charter_cli(&node, &["import", bad.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 error(s); nothing was published"), "{err}");
    let line = sample
        .lines()
        .position(|l| l.contains("legal_days = 45"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("bad.toml:{line}:1: services[")),
        "{err}"
    );
    assert!(err.contains("`vem` is not a weekday"), "{err}");
    let list = charter_cli(&node, &["list", "--json"]).await;
    assert!(
        json(&list)["charters"].as_array().is_none_or(Vec::is_empty),
        "{}",
        text(&list)
    );

    // The sample goes in; explain at a fixed instant; the door sign.
    let good = dir.path().join("celano.toml");
    std::fs::write(&good, sample).unwrap();
    let out = charter_cli(&node, &["import", good.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text(&out).contains("version 1"), "{}", text(&out));
    let out = charter_cli(
        &node,
        &[
            "explain",
            "c_c426",
            "carta-identita",
            "--at",
            "2026-12-05T10:00:00+01:00",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = text(&out);
    // Saturday morning: the registry office is open 09:00–12:00.
    assert!(t.contains("Aperto ora, chiude alle 12:00"), "{t}");
    assert!(t.contains("Fototessera"), "{t}");
    let out = charter_cli(&node, &["--json", "search", "carta", "identita"]).await;
    assert!(out.status.success());
    assert_eq!(
        json(&out)["hits"][0]["service"],
        "carta-identita",
        "{}",
        text(&out)
    );
    let svg = dir.path().join("targa.svg");
    let out = charter_cli(&node, &["sign", "anagrafe", "-o", svg.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("Ufficio Anagrafe"),
        "{svg}"
    );
    node.stop().await;
}

async fn appointments_cli(node: &TestNode, args: &[&str]) -> Output {
    let endpoint = node.desk_addr.to_string();
    tokio::process::Command::new(binary("urpnet-node"))
        .args(["--config", "/nonexistent/urpnet.toml", "appointments"])
        .args(["--endpoint", &endpoint, "--token", &node.token])
        .args(args)
        .env_remove("URPNET_CONFIG")
        .output()
        .await
        .expect("run urpnet-node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_plans_books_moves_and_cancels_from_the_command_line() {
    let node = TestNode::start("c_c426", Backend::Sqlite, "cli_appointments")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let charter = dir.path().join("celano.toml");
    std::fs::write(
        &charter,
        include_str!("../../examples/charters/celano.toml"),
    )
    .unwrap();
    let out = charter_cli(&node, &["import", charter.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plans = dir.path().join("plans.toml");
    let sample = include_str!("../../examples/appointments/celano.toml");
    // An unknown service: refused, naming the plan and the field.
    std::fs::write(&plans, sample.replacen("carta-identita", "carta-magica", 1)).unwrap();
    let out = appointments_cli(&node, &["plan", plans.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plans[2].service"), "{err}");
    std::fs::write(&plans, sample).unwrap();
    let out = appointments_cli(&node, &["plan", plans.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text(&out).contains("autorizzazione-paesaggistica"),
        "{}",
        text(&out)
    );

    let out = appointments_cli(&node, &["--json", "slots", "anagrafe", "carta-identita"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let slots = json(&out)["slots"].as_array().unwrap().clone();
    assert!(slots.len() >= 2, "{slots:?}");
    let first = slots[0]["start"].as_str().unwrap().to_string();
    let second = slots[1]["start"].as_str().unwrap().to_string();
    let out = appointments_cli(
        &node,
        &[
            "--json",
            "book",
            "anagrafe",
            "carta-identita",
            &first,
            "--given-name",
            "Rosa",
            "--family-name",
            "Cerasani",
            "--address",
            "Via Tiburtina 40, Celano",
            "--email",
            "rosa@example.it",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let booked = json(&out);
    let id = booked["appointment"]["id"].as_str().unwrap().to_string();
    assert!(
        booked["appointment"]["bookedBy"]
            .as_str()
            .unwrap()
            .starts_with("operator:"),
        "{booked}"
    );
    assert!(
        booked.get("manageToken").is_none(),
        "operators never see the token"
    );
    let out = appointments_cli(&node, &["move", &id, &second]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text(&out).starts_with("moved:"), "{}", text(&out));
    let out = appointments_cli(
        &node,
        &["agenda", "--office", "anagrafe", "--date", &second[..10]],
    )
    .await;
    assert!(text(&out).contains("Rosa Cerasani"), "{}", text(&out));
    let out = appointments_cli(&node, &["mark", &id, "attended"]).await;
    assert!(!out.status.success(), "not before it starts");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mark it once it has started"));
    let out = appointments_cli(
        &node,
        &["cancel", &id, "--reason", "Ha chiamato per annullare"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = appointments_cli(&node, &["cancel", &id]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already cancelled"));
    node.stop().await;
}
