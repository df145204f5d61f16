//! `kill -9` in the middle of delivery: two nodes run as real child
//! processes and hand tickets over while one of them, in turn, is killed at
//! a random point (after a random number of handoffs acknowledged by the
//! sender, or of tickets stored by the receiver) and restarted. Afterwards
//! every event is present exactly once on both participants and the folded
//! states are equal.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use urpnet_node::cli::Desk;
use urpnet_proto::v1::{
    AnswerHandoffRequest, HandoffRequest, ListOffersRequest, ListTicketsRequest,
};
use urpnet_tests::federation::{ABRUZZO, CELANO, TestRegistry};
use urpnet_tests::shared::{converged, get, peers, request};
use urpnet_tests::{Backend, ProcessNode, node_config, wait_for};

/// Kill rounds: the sender and the receiver are killed alternately.
const ROUNDS: usize = 12;

async fn ticket_ids(desk: &Desk) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let resp = desk
            .clone()
            .list_tickets(ListTicketsRequest {
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        ids.extend(resp.tickets.into_iter().map(|t| t.id));
        if resp.next_page_token.is_empty() {
            return Some(ids);
        }
        page_token = resp.next_page_token;
    }
}

/// Creates tickets at Celano and offers each to the region until Celano
/// stops answering or `stop` is set; counts acknowledged handoffs.
fn hand_over_in_a_loop(
    desk: Desk,
    acked: Arc<AtomicUsize>,
    worker: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut desk = desk;
        for i in 0.. {
            let mut req = request("sanita.prenotazioni", false);
            req.request_id = format!("crash-{worker}-{i}-{}", ulid::Ulid::new());
            let Ok(created) = desk.create_ticket(req).await else {
                return;
            };
            let id = created.into_inner().ticket.expect("ticket").id;
            let offered = desk
                .handoff(HandoffRequest {
                    ticket_id: id,
                    to_node: ABRUZZO.id.into(),
                    reason: "per competenza".into(),
                    overflow: false,
                })
                .await;
            if offered.is_err() {
                return;
            }
            acked.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// Accepts every offer in the region's inbox until it stops answering.
fn accept_in_a_loop(desk: Desk) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut desk = desk;
        loop {
            let Ok(offers) = desk.list_offers(ListOffersRequest::default()).await else {
                return;
            };
            let incoming = offers.into_inner().incoming;
            if incoming.is_empty() {
                // Nothing yet: look again shortly (pacing, not synchronisation).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for offer in incoming {
                let id = offer.ticket.expect("ticket").id;
                let answer = desk
                    .accept_handoff(AnswerHandoffRequest {
                        ticket_id: id,
                        reason: String::new(),
                    })
                    .await;
                if matches!(&answer, Err(s) if s.code() == tonic::Code::Unavailable) {
                    return;
                }
            }
        }
    })
}

urpnet_tests::on_both_backends!(
    every_event_arrives_exactly_once_despite_kill_9_of_sender_or_receiver
);

async fn every_event_arrives_exactly_once_despite_kill_9_of_sender_or_receiver(
    backend: Backend,
    test: &str,
) {
    let seed: u64 = std::env::var("URPNET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill -9 points from seed {seed} (rerun with URPNET_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let Some((rdir, mut rconfig)) = TestRegistry::config(backend, test).await else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    rconfig.membership.heartbeat_interval = Duration::from_millis(200);
    let registry = TestRegistry::start_with(rconfig, Some(rdir)).await;
    registry.import_sample_taxonomy().await;
    let mut configs = Vec::new();
    let mut dirs = Vec::new();
    for office in [CELANO, ABRUZZO] {
        let (dir, mut config) = node_config(office.id, backend, &format!("{test}_{}", office.id))
            .await
            .expect("backend checked above");
        config.peering.max_backoff = Duration::from_millis(500);
        config.peering.batch_size = 50;
        registry
            .enrol_node(&mut config, office.level, office.territory)
            .await;
        configs.push(config);
        dirs.push(dir);
    }
    let (celano_config, region_config) = (configs[0].clone(), configs[1].clone());
    let mut celano = ProcessNode::start(&celano_config).await;
    let mut region = ProcessNode::start(&region_config).await;
    for config in [&celano_config, &region_config] {
        let dir = config.node.data_dir.clone();
        wait_for("both members known", Duration::from_secs(30), || {
            let dir = dir.clone();
            async move {
                let m = urpnet_node::registry_link::load_cache(&dir).0?;
                (m.is_active(CELANO.id) && m.is_active(ABRUZZO.id)).then_some(())
            }
        })
        .await;
    }

    let acked = Arc::new(AtomicUsize::new(0));
    for round in 0..ROUNDS {
        let mut load = Vec::new();
        for w in 0..4 {
            load.push(hand_over_in_a_loop(
                celano.desk().await,
                acked.clone(),
                (round * 4 + w) as u64,
            ));
        }
        load.push(accept_in_a_loop(region.desk().await));
        if round % 2 == 0 {
            // Kill the sender after a random number of further handoffs.
            let target = acked.load(Ordering::SeqCst) + rng.gen_range(5..60);
            wait_for(
                "handoffs before killing the sender",
                Duration::from_secs(60),
                || {
                    let n = acked.load(Ordering::SeqCst);
                    async move { (n >= target).then_some(()) }
                },
            )
            .await;
            celano.kill9().await;
            celano = ProcessNode::start(&celano_config).await;
        } else {
            // Kill the receiver once it has stored a random number more.
            let desk = region.desk().await;
            let have = ticket_ids(&desk).await.map_or(0, |t| t.len());
            let target = have + rng.gen_range(5..60);
            wait_for(
                "tickets at the receiver before killing it",
                Duration::from_secs(60),
                || {
                    let desk = desk.clone();
                    async move { (ticket_ids(&desk).await?.len() >= target).then_some(()) }
                },
            )
            .await;
            region.kill9().await;
            region = ProcessNode::start(&region_config).await;
        }
        for task in load {
            task.abort();
        }
    }
    eprintln!(
        "{} handoffs acknowledged across {ROUNDS} kills",
        acked.load(Ordering::SeqCst)
    );

    // Let the region answer every offer still pending, then wait for both
    // outboxes to drain.
    let finish = accept_in_a_loop(region.desk().await);
    let (celano_desk, region_desk) = (celano.desk().await, region.desk().await);
    for desk in [&celano_desk, &region_desk] {
        wait_for("the outbox to drain", Duration::from_secs(60), || {
            let desk = desk.clone();
            async move {
                let offers = region_desk_offers(&desk).await?;
                let peers = peers(&desk).await?;
                (offers == 0 && peers.iter().all(|p| p.outbox_depth == 0)).then_some(())
            }
        })
        .await;
    }
    finish.abort();

    // Every ticket Celano offered is at the region with exactly the same
    // events, and both fold them to the same state.
    let at_celano: Vec<String> = ticket_ids(&celano_desk).await.expect("list");
    let at_region: HashSet<String> = ticket_ids(&region_desk)
        .await
        .expect("list")
        .into_iter()
        .collect();
    let mut compared = 0;
    for id in &at_celano {
        let ticket = get(&celano_desk, id).await.expect("ticket");
        if ticket.pending_handoff.is_none() && ticket.handoff_count == 0 {
            // Its handoff call never happened (Celano was killed first).
            assert!(!at_region.contains(id));
            continue;
        }
        let history = converged(&celano_desk, &region_desk, id, Duration::from_secs(30)).await;
        let ids: HashSet<&String> = history.iter().map(|(e, _)| e).collect();
        assert_eq!(
            ids.len(),
            history.len(),
            "an event is present twice in {id}"
        );
        assert_eq!(
            Some(ticket),
            get(&region_desk, id).await,
            "folded states differ for {id}"
        );
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} tickets were handed over");
    assert!(at_region.iter().all(|id| at_celano.contains(id)));
}

/// Offers still pending at the node (0 when none).
async fn region_desk_offers(desk: &Desk) -> Option<usize> {
    let offers = desk
        .clone()
        .list_offers(ListOffersRequest::default())
        .await
        .ok()?
        .into_inner();
    Some(offers.incoming.len() + offers.outgoing.len())
}
