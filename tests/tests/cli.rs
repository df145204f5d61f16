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
