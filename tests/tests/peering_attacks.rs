//! A member turned hostile, talking straight to a node's Peering service with
//! its real certificate: every forged, misdirected, oversized or replayed
//! item is refused (or ignored) exactly as the rules say, counted and logged,
//! and the good events of the same batch are stored.

use std::time::Duration;

use prost::Message as _;
use tonic::Code;
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::ids::NodeId;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::tls::TlsMaterial;
use urpnet_proto::v1::peering_client::PeeringClient;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{
    AnswerHandoffRequest, Channel as Ch, Created, DeliverRequest, DeliverResponse,
    GetHistoryRequest, GetTicketRequest, HandoffDeclined, HandoffOffered, Hlc, Level, Location,
    MemberStatus, PayloadKind, SetStatusRequest, Signed, Status, StatusChanged, TicketEvent,
};
use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation, counter};
use urpnet_tests::shared::{accept, get};
use urpnet_tests::{Backend, wait_for};

const ROGUE: &str = "c_i804";
const GHOST: &str = "c_a515";

/// Events made here are stamped like a node's clock would: each later than
/// the one before.
fn stamp() -> Hlc {
    static LOGICAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    Hlc {
        wall_ms: system_time_ms(),
        logical: LOGICAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
}

/// Each (ticket, author)'s chain head, so the events made here follow their
/// author's chain as an honest node's would.
fn next_in_chain(ticket: &str, author: &str, e: &mut TicketEvent) {
    /// (ticket, author, seq, hash of the event at seq).
    type Head = (String, String, u64, Vec<u8>);
    static HEADS: std::sync::Mutex<Vec<Head>> = std::sync::Mutex::new(Vec::new());
    let mut heads = HEADS.lock().unwrap();
    let at = heads
        .iter()
        .position(|h| h.0 == ticket && h.1 == author)
        .unwrap_or_else(|| {
            heads.push((ticket.into(), author.into(), 0, Vec::new()));
            heads.len() - 1
        });
    e.author_seq = heads[at].2 + 1;
    e.prev_hash = heads[at].3.clone();
    heads[at].2 = e.author_seq;
    heads[at].3 = urpnet_node::shared_ticket::fold::event_hash(e);
}

/// An event as the rogue signs it, at `(author_seq, prev_hash)`.
fn signed_at(
    signer: &NodeSigner,
    ticket: &str,
    epoch: u64,
    kind: Kind,
    chain: Option<(u64, Vec<u8>)>,
) -> (TicketEvent, Signed) {
    let mut e = TicketEvent {
        event_id: ulid::Ulid::new().to_string(),
        ticket_id: ticket.into(),
        hlc: Some(stamp()),
        author_node: signer.node().to_string(),
        actor: "op-rogue".into(),
        owner_epoch: epoch,
        author_seq: 0,
        prev_hash: Vec::new(),
        kind: Some(kind),
    };
    match chain {
        Some((seq, prev)) => (e.author_seq, e.prev_hash) = (seq, prev),
        None => next_in_chain(ticket, signer.node().as_str(), &mut e),
    }
    let signed = signer.sign(PayloadKind::TicketEvent, e.encode_to_vec());
    (e, signed)
}

/// An event refused before it is stored, so it takes no place in its
/// author's chain.
fn refused_event(
    signer: &NodeSigner,
    ticket: &str,
    epoch: u64,
    kind: Kind,
) -> (TicketEvent, Signed) {
    signed_at(signer, ticket, epoch, kind, Some((99, vec![0; 32])))
}

/// The rogue's next event on `ticket`, in its chain.
fn event(signer: &NodeSigner, ticket: &str, epoch: u64, kind: Kind) -> (TicketEvent, Signed) {
    signed_at(signer, ticket, epoch, kind, None)
}

/// A ticket id the signer's node minted.
fn ticket_of(signer: &NodeSigner) -> String {
    urpnet_proto::ids::TicketId::mint(signer.node()).to_string()
}

fn created(signer: &NodeSigner, ticket: &str, n: u32) -> (TicketEvent, Signed) {
    event(
        signer,
        ticket,
        0,
        Kind::Created(Created {
            reference: format!("{}-2026-{n:06}", signer.node()),
            category: "informazioni".into(),
            channel: Ch::Web as i32,
            subject: "Richiesta".into(),
            description: "Testo".into(),
            location: Some(Location {
                istat_code: "066098".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
}

fn offer(signer: &NodeSigner, ticket: &str, to: &str) -> (TicketEvent, Signed) {
    event(
        signer,
        ticket,
        0,
        Kind::HandoffOffered(HandoffOffered {
            to_node: to.into(),
            reason: "per competenza".into(),
            ..Default::default()
        }),
    )
}

fn peering(
    material: &TlsMaterial,
    endpoint: &str,
    to: &str,
) -> PeeringClient<tonic::transport::Channel> {
    PeeringClient::new(urpnet_tests::shared::channel_as(material, endpoint, to))
        .max_encoding_message_size(64 * 1024 * 1024)
        .max_decoding_message_size(64 * 1024 * 1024)
}

async fn deliver(
    client: &mut PeeringClient<tonic::transport::Channel>,
    events: Vec<Signed>,
) -> Result<DeliverResponse, tonic::Status> {
    client
        .deliver(DeliverRequest {
            events,
            contacts: Vec::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn refused(metrics: &str, reason: &str) -> f64 {
    counter(
        metrics,
        &format!("urpnet_peering_refused_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_misdirected_oversized_and_replayed_items_are_refused_and_good_ones_kept() {
    let test = "peering_attacks";
    let fed = TestFederation::start(Backend::Sqlite, test, &[CELANO, ABRUZZO], |c| {
        c.peering.max_message_bytes = 1024 * 1024;
    })
    .await
    .expect("sqlite is always there");
    // Two more members whose keys the attacker holds: itself and a ghost.
    let (rogue_tls, rogue) = fed.registry.enrol(ROGUE, Level::Comune, &["066098"]).await;
    let (_, ghost) = fed.registry.enrol(GHOST, Level::Comune, &["066006"]).await;
    let celano = fed.node(CELANO.id);
    let celano_dir = celano.config.node.data_dir.clone();
    wait_for(
        "Celano to know the new members",
        Duration::from_secs(20),
        || {
            let dir = celano_dir.clone();
            async move {
                let m = urpnet_node::registry_link::load_cache(&dir).0?;
                (m.is_active(ROGUE) && m.is_active(GHOST)).then_some(())
            }
        },
    )
    .await;
    let endpoint = celano.config.registry.advertise.clone();
    let mut client = peering(&rogue_tls, &endpoint, CELANO.id);
    let before = celano.metrics().await;

    // A batch mixing good events with every kind of bad one.
    let t1 = ticket_of(&rogue);
    let (_, t1_created) = created(&rogue, &t1, 1);
    let (_, t1_offer) = offer(&rogue, &t1, CELANO.id);
    // Signed by the rogue but claiming the region as author.
    let (_, mut forged) = refused_event(&rogue, &t1, 0, Kind::Note(Default::default()));
    forged.author = ABRUZZO.id.into();
    // Signed by the rogue, naming another author inside.
    let mut mismatch = TicketEvent::decode(
        refused_event(&rogue, &t1, 0, Kind::Note(Default::default()))
            .1
            .payload
            .as_slice(),
    )
    .unwrap();
    mismatch.author_node = ABRUZZO.id.into();
    let mismatch = rogue.sign(PayloadKind::TicketEvent, mismatch.encode_to_vec());
    // A genuine ticket of the ghost's, offered to Celano, relayed by the rogue
    // who takes no part in it.
    let t2 = ticket_of(&ghost);
    let (_, t2_created) = created(&ghost, &t2, 1);
    let (_, t2_offer) = offer(&ghost, &t2, CELANO.id);
    // The rogue's own ticket, never offered to Celano.
    let t3 = ticket_of(&rogue);
    let (_, t3_created) = created(&rogue, &t3, 2);
    let garbage = rogue.sign(PayloadKind::TicketEvent, vec![0xff; 40]);
    let mut wrong_kind = t1_created.clone();
    wrong_kind.kind = PayloadKind::ArchiveBatch as i32;
    let batch = vec![
        t1_created, forged, t2_created, t1_offer, mismatch, t2_offer, t3_created, garbage,
        wrong_kind,
    ];
    let resp = deliver(&mut client, batch.clone()).await.expect("deliver");
    assert_eq!(resp.applied, 2, "{resp:?}");
    let mut refused_at: Vec<u32> = resp.refused.iter().map(|v| v.index).collect();
    refused_at.sort_unstable();
    assert_eq!(refused_at, vec![1, 4, 7, 8], "{resp:?}");
    let mut retry_at: Vec<u32> = resp.retry.iter().map(|v| v.index).collect();
    retry_at.sort_unstable();
    assert_eq!(retry_at, vec![2, 5, 6], "{resp:?}");
    assert!(resp.retry.iter().all(|v| v.retry_after_ms > 0));
    assert!(
        resp.retry
            .iter()
            .any(|v| v.reason.contains("not one of its participants")),
        "{resp:?}"
    );

    // The good events are stored: Celano holds T1 with the offer to it.
    let mut desk = celano.desk().await;
    let t1_state = get(&desk, &t1).await.expect("ticket stored");
    assert_eq!(t1_state.origin_node, ROGUE);
    assert_eq!(
        t1_state.pending_handoff.map(|p| p.to_node),
        Some(CELANO.id.to_string())
    );
    for absent in [&t2, &t3] {
        let err = desk
            .get_ticket(GetTicketRequest {
                ticket_id: absent.clone(),
                reference: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{absent} must not be stored");
    }

    // The same batch again: nothing new, the same refusals.
    let replay = deliver(&mut client, batch).await.expect("replay");
    assert_eq!((replay.applied, replay.duplicates), (0, 2), "{replay:?}");
    assert_eq!(replay.refused.len(), 4);

    // Celano accepts; the rogue, no longer owner, tries to resolve it with
    // its stale epoch: stored, but without effect.
    desk.accept_handoff(AnswerHandoffRequest {
        ticket_id: t1.clone(),
        reason: String::new(),
    })
    .await
    .expect("accept");
    let (stale_event, stale) = event(
        &rogue,
        &t1,
        0,
        Kind::StatusChanged(StatusChanged {
            from: Status::New as i32,
            to: Status::Rejected as i32,
            reason: "spam".into(),
        }),
    );
    let resp = deliver(&mut client, vec![stale]).await.expect("deliver");
    assert_eq!(resp.applied, 1, "kept in the log: {resp:?}");
    let history = desk
        .get_history(GetHistoryRequest {
            ticket_id: t1.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let entry = history
        .iter()
        .find(|e| e.event.as_ref().unwrap().event_id == stale_event.event_id)
        .expect("the stale event is in the history");
    assert!(!entry.effective);
    assert!(
        entry.ineffective_reason.contains("not the owner"),
        "{entry:?}"
    );
    let t1_state = get(&desk, &t1).await.expect("ticket stored");
    assert_eq!(t1_state.owner_node, CELANO.id);
    assert_eq!(t1_state.status(), Status::New);

    // Too many events in one batch: refused whole, naming the field.
    let (_, one) = event(&rogue, &t1, 1, Kind::Note(Default::default()));
    let err = deliver(&mut client, vec![one.clone(); 1001])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("events"), "{err:?}");
    // Bigger than the node's message limit: refused before decoding.
    let big = rogue.sign(PayloadKind::TicketEvent, vec![0; 200 * 1024]);
    let err = deliver(&mut client, vec![big; 8]).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // Revoked: refused at the gate as soon as Celano's member list says so.
    fed.registry
        .admin()
        .set_status(SetStatusRequest {
            id: ROGUE.into(),
            status: MemberStatus::Revoked as i32,
            reason: "forged events".into(),
        })
        .await
        .expect("revoke");
    wait_for(
        "Celano to learn of the revocation",
        Duration::from_secs(20),
        || {
            let dir = celano_dir.clone();
            async move {
                let m = urpnet_node::registry_link::load_cache(&dir).0?;
                (!m.is_active(ROGUE)).then_some(())
            }
        },
    )
    .await;
    let err = deliver(&mut client, vec![one]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Every refusal was counted under its rule.
    let after = celano.metrics().await;
    for (reason, at_least) in [
        ("bad_signature", 2.0),
        ("author_mismatch", 2.0),
        ("malformed", 2.0),
        ("wrong_kind", 2.0),
        ("sender_not_participant", 4.0),
        ("receiver_not_participant", 2.0),
        ("oversized_batch", 1.0),
        ("not_active_member", 1.0),
    ] {
        let delta = refused(&after, reason) - refused(&before, reason);
        assert!(
            delta >= at_least,
            "{reason}: counted {delta}, expected at least {at_least}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_signer_is_quarantined_until_released() {
    let (fed, rogue, mut client) = rogue_federation("equivocation").await;
    let celano = fed.node(CELANO.id);
    let mut desk = celano.desk().await;

    // The rogue offers its ticket to Celano and, at the same owner epoch,
    // to the region: two different handoffs signed at one epoch.
    let t = ticket_of(&rogue);
    let batch = vec![
        created(&rogue, &t, 7).1,
        offer(&rogue, &t, CELANO.id).1,
        offer(&rogue, &t, ABRUZZO.id).1,
    ];
    let resp = deliver(&mut client, batch).await.expect("deliver");
    assert_eq!(resp.applied, 3, "{resp:?}");
    let ticket = get(&desk, &t).await.expect("ticket stored");
    assert_eq!(ticket.equivocators, vec![ROGUE.to_string()]);
    assert_eq!(
        ticket.pending_handoff.map(|p| p.to_node),
        Some(CELANO.id.to_string()),
        "the first offer in fold order stands"
    );

    // Quarantined: refused at the gate, shown in the peers list.
    let err = wait_for(
        "the rogue to be quarantined",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            async move {
                let (_, probe) = created(&rogue_probe(), "01JD0000000000000000000000", 0);
                deliver(&mut client, vec![probe]).await.err()
            }
        },
    )
    .await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("quarantined"), "{err:?}");
    let peers = desk
        .list_peers(urpnet_proto::v1::ListPeersRequest {})
        .await
        .unwrap()
        .into_inner()
        .peers;
    let row = peers.iter().find(|p| p.peer == ROGUE).expect("rogue row");
    assert!(row.quarantine_reason.contains("equivocation"), "{row:?}");

    // Operators only may release; then the rogue is heard again.
    let release = urpnet_proto::v1::SetPeerQuarantineRequest {
        peer: ROGUE.into(),
        quarantine: false,
        reason: String::new(),
    };
    desk.set_peer_quarantine(release).await.expect("release");
    let (_, note) = event(&rogue, &t, 0, Kind::Note(Default::default()));
    let resp = deliver(&mut client, vec![note]).await.expect("heard again");
    assert_eq!(resp.applied, 1);
}

/// Celano and the region, and the rogue enrolled, known to Celano and
/// talking to it over mTLS with its real certificate.
async fn rogue_federation(
    test: &str,
) -> (
    TestFederation,
    NodeSigner,
    PeeringClient<tonic::transport::Channel>,
) {
    let fed = TestFederation::start(Backend::Sqlite, test, &[CELANO, ABRUZZO], |_| {})
        .await
        .expect("sqlite");
    let (rogue_tls, rogue) = fed.registry.enrol(ROGUE, Level::Comune, &["066098"]).await;
    let celano = fed.node(CELANO.id);
    let celano_dir = celano.config.node.data_dir.clone();
    wait_for("Celano to know the rogue", Duration::from_secs(20), || {
        let dir = celano_dir.clone();
        async move {
            let m = urpnet_node::registry_link::load_cache(&dir).0?;
            m.is_active(ROGUE).then_some(())
        }
    })
    .await;
    let client = peering(&rogue_tls, &celano.config.registry.advertise, CELANO.id);
    (fed, rogue, client)
}

/// A signer whose events nobody needs to verify (the gate refuses first).
fn rogue_probe() -> NodeSigner {
    NodeSigner::generate(NodeId::new(ROGUE).expect("id"))
}

/// docs/security.md T1: a participant cannot become a ticket's origin by
/// signing a `Created` stamped before the real one, and a former owner
/// cannot undo an accepted handoff with events stamped before its offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_of_a_members_choosing_take_no_ticket_over() {
    let (fed, rogue, mut client) = rogue_federation("takeover").await;
    let celano = fed.node(CELANO.id);
    let mut desk = celano.desk().await;
    let before = celano.metrics().await;

    // Celano's ticket, offered to the rogue: the rogue is a participant.
    let ours = urpnet_tests::shared::create(
        &mut desk,
        urpnet_tests::shared::request("informazioni", false),
    )
    .await;
    desk.handoff(urpnet_proto::v1::HandoffRequest {
        ticket_id: ours.id.clone(),
        to_node: ROGUE.into(),
        reason: "per competenza".into(),
        overflow: false,
    })
    .await
    .expect("offer to the rogue");
    // A Created for Celano's ticket id, stamped at the dawn of time.
    let (mut early, _) = created(&rogue, &ours.id, 50);
    early.hlc = Some(Hlc {
        wall_ms: 1,
        logical: 0,
    });
    let early = rogue.sign(PayloadKind::TicketEvent, early.encode_to_vec());
    let resp = deliver(&mut client, vec![early]).await.expect("deliver");
    assert_eq!(resp.applied, 0, "{resp:?}");
    assert_eq!(resp.refused.len(), 1, "{resp:?}");
    assert!(
        resp.refused[0].reason.contains("not minted by c_i804"),
        "{resp:?}"
    );
    let held = get(&desk, &ours.id).await.expect("still held");
    assert_eq!(
        (held.origin_node.as_str(), held.owner_node.as_str()),
        (CELANO.id, CELANO.id)
    );

    // The rogue's own ticket, offered to Celano, accepted there.
    let t = ticket_of(&rogue);
    let (created_event, t_created) = created(&rogue, &t, 51);
    // Leave room on the clock between the Created and the offer, for the
    // backdated events below.
    let created_ms = created_event.hlc.unwrap().wall_ms;
    while system_time_ms() < created_ms + 5 {
        std::hint::spin_loop();
    }
    let (offer_event, t_offer) = offer(&rogue, &t, CELANO.id);
    let resp = deliver(&mut client, vec![t_created, t_offer])
        .await
        .expect("deliver");
    assert_eq!(resp.applied, 2, "{resp:?}");
    accept(&mut desk, &t).await;
    // Backdated: its next event, stamped before the offer it follows.
    let (mut backdated, _) = event(
        &rogue,
        &t,
        0,
        Kind::HandoffOffered(HandoffOffered {
            to_node: ABRUZZO.id.into(),
            reason: "ci ripenso".into(),
            ..Default::default()
        }),
    );
    backdated.hlc = Some(Hlc {
        wall_ms: offer_event.hlc.unwrap().wall_ms - 1,
        logical: 0,
    });
    // A fork: another event with the offer's number, stamped before it.
    let mut fork = offer_event.clone();
    fork.event_id = ulid::Ulid::new().to_string();
    fork.hlc = backdated.hlc;
    fork.kind = Some(Kind::StatusChanged(StatusChanged {
        from: Status::New as i32,
        to: Status::Rejected as i32,
        reason: "annullato".into(),
    }));
    let sign = |e: &TicketEvent| rogue.sign(PayloadKind::TicketEvent, e.encode_to_vec());
    let resp = deliver(&mut client, vec![sign(&backdated), sign(&fork)])
        .await
        .expect("deliver");
    assert_eq!(resp.applied, 2, "kept in the log: {resp:?}");
    let held = get(&desk, &t).await.expect("held");
    assert_eq!(held.owner_node, CELANO.id, "the handoff stands");
    assert_eq!(held.owner_epoch, 1);
    assert_eq!(held.status(), Status::New, "the fork closed nothing");
    assert!(held.pending_handoff.is_none());
    assert_eq!(
        held.equivocators,
        vec![ROGUE.to_string()],
        "{:#?}",
        urpnet_tests::shared::history(&desk, &t).await
    );
    let after = celano.metrics().await;
    assert!(refused(&after, "not_origin") - refused(&before, "not_origin") >= 1.0);
}

/// docs/security.md T4: a participant cannot grow a ticket's log without
/// end; past the per-author limit its events are refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_log_is_bounded_per_author() {
    let (fed, rogue, mut client) = rogue_federation("bounded").await;
    let celano = fed.node(CELANO.id);
    let t = ticket_of(&rogue);
    let mut events = vec![created(&rogue, &t, 60).1, offer(&rogue, &t, CELANO.id).1];
    let limit = urpnet_node::shared_ticket::MAX_EVENTS_PER_AUTHOR;
    while events.len() < limit + 50 {
        events.push(event(&rogue, &t, 0, Kind::Note(Default::default())).1);
    }
    let (mut applied, mut full) = (0, 0);
    for chunk in events.chunks(1000) {
        let resp = deliver(&mut client, chunk.to_vec()).await.expect("deliver");
        applied += resp.applied as usize;
        full += resp
            .refused
            .iter()
            .filter(|v| v.reason.contains("limit of events"))
            .count();
    }
    assert_eq!(applied, limit);
    assert_eq!(full, 50);
    let desk = celano.desk().await;
    let held = get(&desk, &t).await.expect("held");
    assert_eq!(held.event_count as usize, limit);
    let metrics = celano.metrics().await;
    assert!(refused(&metrics, "ticket_full") >= 50.0);
}

/// An honest owner re-offering after a decline is no equivocator, even to a
/// participant the decline has not reached yet (found by the fault
/// simulation: a delayed decline got an honest comune quarantined). The
/// offer names the decline it follows and waits for it; two offers at one
/// epoch are still equivocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_after_a_decline_waits_for_that_decline_and_is_no_equivocation() {
    let (fed, owner, mut client) = rogue_federation("reoffer").await;
    let (_, ghost) = fed.registry.enrol(GHOST, Level::Comune, &["066006"]).await;
    let celano = fed.node(CELANO.id);
    let celano_dir = celano.config.node.data_dir.clone();
    wait_for("Celano to know the ghost", Duration::from_secs(20), || {
        let dir = celano_dir.clone();
        async move {
            let m = urpnet_node::registry_link::load_cache(&dir).0?;
            m.is_active(GHOST).then_some(())
        }
    })
    .await;
    let mut desk = celano.desk().await;
    let t = ticket_of(&owner);

    // The owner offers its ticket to Celano, which declines.
    let batch = vec![created(&owner, &t, 70).1, offer(&owner, &t, CELANO.id).1];
    let resp = deliver(&mut client, batch).await.expect("deliver");
    assert_eq!(resp.applied, 2, "{resp:?}");
    desk.decline_handoff(AnswerHandoffRequest {
        ticket_id: t.clone(),
        reason: "non di competenza".into(),
    })
    .await
    .expect("Celano declines");
    let d1 = get(&desk, &t).await.expect("held").last_decline_event_id;
    assert!(!d1.is_empty());

    // Then to the ghost, naming Celano's decline: applied at once.
    let reoffer = |to: &str, after: &str| {
        event(
            &owner,
            &t,
            0,
            Kind::HandoffOffered(HandoffOffered {
                to_node: to.into(),
                reason: "per competenza".into(),
                after_decline_event_id: after.into(),
            }),
        )
    };
    let (offer2, offer2_signed) = reoffer(GHOST, &d1);
    let resp = deliver(&mut client, vec![offer2_signed])
        .await
        .expect("deliver");
    assert_eq!(resp.applied, 1, "{resp:?}");

    // The ghost declines; its decline has not reached Celano when the owner
    // offers to the region, naming it. Celano holds the offer back.
    let (d2, d2_signed) = event(
        &ghost,
        &t,
        0,
        Kind::HandoffDeclined(HandoffDeclined {
            offer_event_id: offer2.event_id.clone(),
            reason: "non di competenza".into(),
        }),
    );
    let (_, offer3_signed) = reoffer(ABRUZZO.id, &d2.event_id);
    let resp = deliver(&mut client, vec![offer3_signed.clone()])
        .await
        .expect("deliver");
    assert_eq!(resp.applied, 0, "{resp:?}");
    assert_eq!(resp.retry.len(), 1, "{resp:?}");
    assert!(
        resp.retry[0].reason.contains("has not arrived yet"),
        "{resp:?}"
    );
    let held = get(&desk, &t).await.expect("held");
    assert!(held.equivocators.is_empty(), "{held:?}");
    assert_eq!(
        held.pending_handoff.map(|p| p.to_node).as_deref(),
        Some(GHOST)
    );

    // The decline arrives (relayed by the owner), and the offer with it.
    let resp = deliver(&mut client, vec![d2_signed, offer3_signed])
        .await
        .expect("deliver");
    assert_eq!(resp.applied, 2, "{resp:?}");
    let held = get(&desk, &t).await.expect("held");
    assert!(held.equivocators.is_empty(), "{held:?}");
    assert_eq!(
        held.pending_handoff.map(|p| p.to_node).as_deref(),
        Some(ABRUZZO.id)
    );
    let (_, note) = event(&owner, &t, 0, Kind::Note(Default::default()));
    let resp = deliver(&mut client, vec![note])
        .await
        .expect("not quarantined");
    assert_eq!(resp.applied, 1, "{resp:?}");

    // A decline named by something that is not an event id: refused.
    let (_, garbled) = signed_at(
        &owner,
        &t,
        0,
        Kind::HandoffOffered(HandoffOffered {
            to_node: CELANO.id.into(),
            reason: "per competenza".into(),
            after_decline_event_id: "ieri".into(),
        }),
        Some((99, vec![0; 32])),
    );
    let resp = deliver(&mut client, vec![garbled]).await.expect("deliver");
    assert_eq!(resp.refused.len(), 1, "{resp:?}");
    assert!(
        resp.refused[0]
            .reason
            .contains("handoff_offered.after_decline_event_id"),
        "{resp:?}"
    );

    // Naming a decline does not license a second offer while one is pending.
    let (_, twice) = reoffer(CELANO.id, &d2.event_id);
    let resp = deliver(&mut client, vec![twice]).await.expect("deliver");
    assert_eq!(resp.applied, 1, "kept in the log: {resp:?}");
    let held = get(&desk, &t).await.expect("held");
    assert_eq!(held.equivocators, vec![ROGUE.to_string()]);
}
