//! Durability: a ticket the node acknowledged survives `kill -9` of the node
//! process in the middle of a burst, on SQLite and on PostgreSQL, and the
//! restarted node's materialised state still equals the fold of its events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use urpnet_examples::samples;
use urpnet_proto::v1::{GetTicketRequest, Ticket};
use urpnet_tests::{Backend, ProcessNode, node_config, wait_for};

async fn acknowledged_tickets_survive_kill_9(backend: Backend, test: &str) {
    let Some((dir, config)) = node_config("c_a662", backend, test).await else {
        return;
    };
    let node = ProcessNode::start(&config).await;
    let desk = node.desk().await;
    let acked: Arc<Mutex<Vec<Ticket>>> = Arc::default();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..32u64 {
        let (mut desk, acked) = (desk.clone(), acked.clone());
        clients.spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(c);
            for i in 0.. {
                let channel = samples::CHANNELS[(c as usize + i) % samples::CHANNELS.len()];
                let req = samples::request(&mut rng, "072006", channel);
                match desk.create_ticket(req).await {
                    Ok(resp) => acked
                        .lock()
                        .unwrap()
                        .push(resp.into_inner().ticket.unwrap()),
                    Err(_) => return, // the node is gone
                }
            }
        });
    }
    wait_for("200 acknowledged creates", Duration::from_secs(60), || {
        let n = acked.lock().unwrap().len();
        async move { (n >= 200).then_some(()) }
    })
    .await;
    node.kill9().await;
    while clients.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{test}: {} creates acknowledged before kill -9",
        acked.len()
    );

    let node = ProcessNode::start(&config).await;
    let mut desk = node.desk().await;
    for ticket in &acked {
        let stored = desk
            .get_ticket(GetTicketRequest {
                ticket_id: ticket.id.clone(),
                reference: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged ticket {} lost: {e}", ticket.reference))
            .into_inner()
            .ticket
            .unwrap();
        assert_eq!(&stored, ticket);
    }
    let mut references: Vec<_> = acked.iter().map(|t| t.reference.clone()).collect();
    references.sort();
    references.dedup();
    assert_eq!(
        references.len(),
        acked.len(),
        "no reference was minted twice"
    );
    drop(desk);
    node.kill9().await;

    let check = tokio::process::Command::new(urpnet_tests::binary("urpnet-node"))
        .arg("--config")
        .arg(node_config_path(&config))
        .arg("check")
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "check failed: {out} {}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(out.contains("stored state equals the fold"), "{out}");
    drop(dir);
}

fn node_config_path(config: &urpnet_node::NodeConfig) -> std::path::PathBuf {
    config.node.data_dir.parent().unwrap().join("urpnet.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_tickets_survive_kill_9() {
    acknowledged_tickets_survive_kill_9(
        Backend::Sqlite,
        "sqlite::acknowledged_tickets_survive_kill_9",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_acknowledged_tickets_survive_kill_9() {
    acknowledged_tickets_survive_kill_9(
        Backend::Postgres,
        "postgres::acknowledged_tickets_survive_kill_9",
    )
    .await;
}
