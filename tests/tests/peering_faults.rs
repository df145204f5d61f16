//! Faults between nodes that keep working: a network partition (a
//! fault-injecting TCP proxy in front of each node's Peering port) and a node
//! restored from an old backup. Both converge with no operator action.

use std::time::Duration;

use urpnet_proto::v1::Status;
use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation};
use urpnet_tests::proxy::Proxy;
use urpnet_tests::shared::{
    converged, get, handed_over, note, outbox_drained, peers, status, wait_ticket,
};
use urpnet_tests::{Backend, wait_for};

/// A free loopback address (the node binds it a moment later).
fn free_addr() -> std::net::SocketAddr {
    // A port outside the ephemeral range (see `free_port`).
    std::net::SocketAddr::from(([127, 0, 0, 1], urpnet_examples::smtp::free_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_nodes_keep_working_and_converge_when_healed() {
    // Each node listens on its own port and is advertised behind a proxy.
    let (celano_addr, region_addr) = (free_addr(), free_addr());
    let celano_proxy = Proxy::start(celano_addr).await;
    let region_proxy = Proxy::start(region_addr).await;
    let proxied = [
        (CELANO.id, celano_addr, celano_proxy.addr),
        (ABRUZZO.id, region_addr, region_proxy.addr),
    ];
    let fed = TestFederation::start(Backend::Sqlite, "partition", &[CELANO, ABRUZZO], |c| {
        let (_, listen, proxy) = proxied
            .iter()
            .find(|(id, ..)| *id == c.node.id.as_str())
            .expect("proxied node");
        c.peering.listen = *listen;
        c.registry.advertise = format!("https://{proxy}");
        c.peering.max_backoff = Duration::from_secs(2);
    })
    .await
    .expect("sqlite");
    let mut celano = fed.node(CELANO.id).desk().await;
    let mut region = fed.node(ABRUZZO.id).desk().await;
    let ticket = handed_over(&mut celano, &mut region, ABRUZZO.id, "sanita.prenotazioni").await;
    let id = ticket.id;

    // Partition: both sides keep working on the shared ticket.
    celano_proxy.cut();
    region_proxy.cut();
    status(&mut region, &id, Status::InProgress)
        .await
        .expect("in progress");
    for i in 0..15 {
        note(
            &mut celano,
            &id,
            &format!("Celano, durante la partizione {i}"),
        )
        .await;
        note(
            &mut region,
            &id,
            &format!("Regione, durante la partizione {i}"),
        )
        .await;
    }
    // The outboxes hold the events and say why.
    wait_for(
        "Celano to report the region unreachable",
        Duration::from_secs(20),
        || {
            let celano = celano.clone();
            async move {
                let row = peers(&celano)
                    .await?
                    .into_iter()
                    .find(|p| p.peer == ABRUZZO.id)?;
                (row.reachable == Some(false)
                    && row.outbox_depth >= 15
                    && !row.last_error.is_empty())
                .then_some(())
            }
        },
    )
    .await;
    assert!(
        celano_proxy.refused() + region_proxy.refused() > 0,
        "the partition was real"
    );
    let at_celano = get(&celano, &id).await.expect("ticket");
    assert_eq!(at_celano.note_count, 15, "Celano has only its own notes");
    assert_eq!(
        at_celano.status(),
        Status::New,
        "the region's status change did not cross"
    );

    // Healed: everything crosses, with no operator action.
    celano_proxy.heal();
    region_proxy.heal();
    let history = converged(&celano, &region, &id, Duration::from_secs(30)).await;
    assert!(history.iter().all(|(_, effective)| *effective));
    let a = wait_ticket("every note at Celano", &celano, &id, |t| t.note_count == 30).await;
    let b = get(&region, &id).await.expect("ticket");
    assert_eq!(a, b);
    assert_eq!(a.status(), Status::InProgress);
    for desk in [&celano, &region] {
        outbox_drained(desk, true, Duration::from_secs(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_old_backup_converges_by_anti_entropy() {
    let mut fed = TestFederation::start(Backend::Sqlite, "backup", &[CELANO, ABRUZZO], |c| {
        c.peering.anti_entropy_interval = Duration::from_millis(300);
    })
    .await
    .expect("sqlite");
    let mut celano = fed.node(CELANO.id).desk().await;
    let mut region = fed.node(ABRUZZO.id).desk().await;
    let ticket = handed_over(&mut celano, &mut region, ABRUZZO.id, "sanita.prenotazioni").await;
    let id = ticket.id;
    note(&mut region, &id, "Prima del backup").await;
    converged(&celano, &region, &id, Duration::from_secs(20)).await;

    // Back up the region's database while it is stopped.
    let backup = tempfile::tempdir().expect("backup dir");
    let files = ["urpnet.db", "urpnet.db-wal", "urpnet.db-shm"];
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        for f in files {
            let _ = std::fs::remove_file(to.join(f));
            if from.join(f).exists() {
                std::fs::copy(from.join(f), to.join(f)).expect("copy");
            }
        }
    };
    let backup_path = backup.path().to_path_buf();
    fed.restart(ABRUZZO.id, |c| copy(&c.node.data_dir, &backup_path))
        .await;
    let mut region = fed.node(ABRUZZO.id).desk().await;

    // Work goes on on both sides and is delivered...
    status(&mut region, &id, Status::InProgress)
        .await
        .expect("in progress");
    for i in 0..5 {
        note(&mut region, &id, &format!("Regione dopo il backup {i}")).await;
        note(&mut celano, &id, &format!("Celano dopo il backup {i}")).await;
    }
    let before_loss = converged(&celano, &region, &id, Duration::from_secs(20)).await;
    outbox_drained(&celano, false, Duration::from_secs(20)).await;

    // ...then the region's disk is lost and the old backup restored: it has
    // forgotten what it received and even what it wrote itself.
    fed.restart(ABRUZZO.id, |c| copy(&backup_path, &c.node.data_dir))
        .await;
    let region = fed.node(ABRUZZO.id).desk().await;
    let restored = get(&region, &id).await.expect("ticket in the backup");
    assert_eq!(
        restored.note_count, 1,
        "the backup predates the later notes"
    );

    // Anti-entropy alone brings it back: same events, same state.
    let after = converged(&celano, &region, &id, Duration::from_secs(30)).await;
    assert_eq!(after, before_loss);
    let a = get(&celano, &id).await.expect("ticket");
    let b = get(&region, &id).await.expect("ticket");
    assert_eq!(a, b);
    assert_eq!(b.status(), Status::InProgress);
    assert_eq!(b.note_count, 11);
}
