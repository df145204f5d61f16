//! The store's group commit on both backends: one bad write in a batch never
//! takes the good ones down with it, and a subsystem the writer does not know
//! writes through it like the node's own.

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

/// A subsystem the node does not have: its own table and its own write
/// operation, run by the node's writer without the writer knowing it (the
/// recipe of docs/architecture.md, "Adding a subsystem").
struct Tally {
    name: String,
    amount: i64,
}

impl urpnet_node::store::Write for Tally {
    type Output = i64;

    async fn run(
        &self,
        tx: &mut urpnet_node::store::Tx<'_>,
        _: &mut urpnet_node::store::Commit,
    ) -> urpnet_node::NodeResult<urpnet_node::NodeResult<i64>> {
        use urpnet_node::store::Value;
        if self.amount < 0 {
            // Refused alone: nothing written, the rest of the batch commits.
            return Ok(Err(urpnet_node::NodeError::invalid(
                "amount",
                "must not be negative",
            )));
        }
        tx.texts(
            "CREATE TABLE IF NOT EXISTS test_tally (name TEXT PRIMARY KEY, total BIGINT NOT NULL)",
            &[],
        )
        .await?;
        let rows = tx
            .texts(
                "INSERT INTO test_tally (name, total) VALUES ($1, $2) ON CONFLICT (name) \
                 DO UPDATE SET total = test_tally.total + $2 RETURNING CAST(total AS TEXT)",
                &[&Value::Text(&self.name), &Value::Int(self.amount)],
            )
            .await?;
        Ok(Ok(rows[0][0].parse().expect("a number")))
    }
}

async fn a_new_subsystem_writes_through_the_same_writer(backend: Backend, test: &str) {
    let Some((dir, config)) = node_config("c_a662", backend, test).await else {
        return;
    };
    std::fs::create_dir_all(&config.node.data_dir).unwrap();
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
    // Tallies, refused tallies and ticket creations race into the same
    // batches.
    let tallies = (0..100).map(|n| Tally {
        name: format!("t{}", n % 10),
        amount: if n % 25 == 7 { -1 } else { n },
    });
    let (tallied, created) = futures::future::join(
        futures::future::join_all(tallies.map(|t| store.write(t))),
        futures::future::join_all((0..30).map(|n| {
            urpnet_node::casework::tables::create(
                &store,
                new_ticket(&signer, n, &format!("c_a662-2026-{n:06}")),
            )
        })),
    )
    .await;
    for (n, r) in tallied.iter().enumerate() {
        if n % 25 == 7 {
            let err = r.as_ref().expect_err("a negative amount is refused");
            assert!(err.to_string().contains("amount"), "{err}");
        } else {
            assert!(r.is_ok(), "{n}: {r:?}");
        }
    }
    assert!(
        created
            .iter()
            .all(|c| matches!(c, Ok(CreateOutcome::Created(_))))
    );
    use sqlx::Row as _;
    for k in 0..10i64 {
        let expected: i64 = (0..100).filter(|n| n % 10 == k && n % 25 != 7).sum();
        let row = sqlx::query("SELECT CAST(total AS BIGINT) FROM test_tally WHERE name = $1")
            .bind(format!("t{k}"))
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(row.get::<i64, _>(0), expected, "t{k}");
    }
    store.close().await;
    drop(store);
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_new_subsystem_writes_through_the_same_writer() {
    a_new_subsystem_writes_through_the_same_writer(
        Backend::Sqlite,
        "sqlite::a_new_subsystem_writes_through_the_same_writer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_new_subsystem_writes_through_the_same_writer() {
    a_new_subsystem_writes_through_the_same_writer(
        Backend::Postgres,
        "postgres::a_new_subsystem_writes_through_the_same_writer",
    )
    .await;
}
