//! The store's group commit on both backends: one bad write in a batch never
//! takes the good ones down with it.

use prost::Message as _;
use urpnet_node::casework::tables::{CreateOutcome, NewTicket};
use urpnet_node::shared_ticket::apply;
use urpnet_node::shared_ticket::tables::StoredEvent;
use urpnet_node::store::{Store, StoreOptions};
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{Created, Hlc, Location, PayloadKind, TicketEvent};
use urpnet_tests::{Backend, node_config};

fn new_ticket(signer: &NodeSigner, n: u64, reference: &str) -> NewTicket {
    let event = TicketEvent {
        event_id: ulid::Ulid::new().to_string(),
        ticket_id: urpnet_proto::ids::TicketId::mint(signer.node()).to_string(),
        hlc: Some(Hlc {
            wall_ms: 1_790_000_000_000 + n,
            logical: 0,
        }),
        author_node: signer.node().to_string(),
        actor: "bench".into(),
        owner_epoch: 0,
        author_seq: 1,
        prev_hash: Vec::new(),
        kind: Some(Kind::Created(Created {
            reference: reference.into(),
            category: "rifiuti".into(),
            subject: format!("Richiesta {n}"),
            location: Some(Location {
                istat_code: "072006".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    let mut state = None;
    apply(&mut state, &event);
    let envelope = signer.sign(PayloadKind::TicketEvent, event.encode_to_vec());
    NewTicket::new(
        state.unwrap(),
        StoredEvent {
            event_id: event.event_id.clone(),
            ticket_id: event.ticket_id.clone(),
            hlc_wall: event.hlc.unwrap().wall_ms as i64,
            hlc_logical: 0,
            author_node: event.author_node.clone(),
            envelope: envelope.encode_to_vec(),
        },
        None,
        format!("test:{n}"),
        n.to_string(),
        vec![],
    )
}

async fn a_bad_write_in_a_batch_loses_no_good_one(backend: Backend, test: &str) {
    let Some((dir, config)) = node_config("c_a662", backend, test).await else {
        return;
    };
    std::fs::create_dir_all(&config.node.data_dir).unwrap();
    urpnet_proto::telemetry::init_logs(Default::default(), "warn");
    let (store, writer) = Store::open(&StoreOptions {
        url: config.database_url(),
        blob_dir: dir.path().join("blobs"),
        max_batch: 256,
        read_connections: 2,
        node: "c_a662".into(),
    })
    .await
    .unwrap();
    let signer = NodeSigner::generate(config.node.id.clone());
    // 60 creates at once; two of them claim the same reference (UNIQUE).
    let tickets: Vec<NewTicket> = (0..60)
        .map(|n| {
            let seq = if n == 45 { 10 } else { n };
            new_ticket(&signer, n, &format!("c_a662-2026-{seq:06}"))
        })
        .collect();
    let results = futures::future::join_all(
        tickets
            .iter()
            .map(|t| urpnet_node::casework::tables::create(&store, t.clone())),
    )
    .await;
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "exactly one of the clashing pair fails: {failed:?}"
    );
    assert!(failed[0] == 10 || failed[0] == 45);
    for (i, (t, r)) in tickets.iter().zip(&results).enumerate() {
        if i == failed[0] {
            assert!(
                urpnet_node::shared_ticket::tables::ticket(&store, &t.ticket.id)
                    .await
                    .unwrap()
                    .is_none(),
                "the failed write stored nothing"
            );
            continue;
        }
        assert!(matches!(r, Ok(CreateOutcome::Created(_))), "{i}: {r:?}");
        assert_eq!(
            urpnet_node::shared_ticket::tables::ticket(&store, &t.ticket.id)
                .await
                .unwrap()
                .as_ref(),
            Some(&t.ticket),
            "{i} was stored"
        );
    }
    // References continue from the highest number, not the highest string:
    // past 999,999 a reference has seven digits and sorts before `999999`.
    for (n, reference) in [(70, "c_a662-2026-999999"), (71, "c_a662-2026-1000000")] {
        let created =
            urpnet_node::casework::tables::create(&store, new_ticket(&signer, n, reference))
                .await
                .unwrap();
        assert!(matches!(created, CreateOutcome::Created(_)));
    }
    assert_eq!(
        urpnet_node::shared_ticket::tables::max_reference_seq(&store, "c_a662-2026-")
            .await
            .unwrap(),
        1_000_000
    );
    store.close().await;
    drop(store);
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_bad_write_in_a_batch_loses_no_good_one() {
    a_bad_write_in_a_batch_loses_no_good_one(
        Backend::Sqlite,
        "sqlite::a_bad_write_in_a_batch_loses_no_good_one",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_bad_write_in_a_batch_loses_no_good_one() {
    a_bad_write_in_a_batch_loses_no_good_one(
        Backend::Postgres,
        "postgres::a_bad_write_in_a_batch_loses_no_good_one",
    )
    .await;
}
