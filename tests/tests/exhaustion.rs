//! docs/security.md T3: a stranger or a member in a loop cannot exhaust a
//! node. The peering gate runs before a request body is decoded; each peer
//! and each operator token has its own rate; metric labels come only from
//! known methods.

use std::time::Duration;

use tonic::Code;
use urpnet_proto::tls::{self, Identity};
use urpnet_proto::v1::peering_client::PeeringClient;
use urpnet_proto::v1::{DeliverRequest, DeliverResponse, PayloadKind, Signed};
use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation, counter};
use urpnet_tests::{Backend, wait_for};

const ROGUE: &str = "c_i804";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_before_decoding_and_every_caller_has_its_rate() {
    let fed = TestFederation::start(Backend::Sqlite, "exhaustion", &[CELANO, ABRUZZO], |c| {
        c.peering.max_message_bytes = 1024 * 1024;
        c.peering.rate_per_second = 2;
        c.peering.rate_burst = 5;
        c.desk.rate_per_second = 2;
        c.desk.rate_burst = 5;
    })
    .await
    .expect("sqlite");
    let celano = fed.node(CELANO.id);
    let endpoint = celano.config.registry.advertise.clone();
    let node_id: urpnet_proto::ids::NodeId = CELANO.id.parse().unwrap();
    let before = celano.metrics().await;

    // No certificate, a 4 MiB message: refused at the gate, not decoded
    // (decoding would have answered OUT_OF_RANGE).
    let anonymous = tls::anonymous_client_config(fed.registry.ca().cert_pem()).unwrap();
    let channel = tls::channel_to(
        &endpoint,
        anonymous,
        Duration::from_secs(5),
        Identity::Node(node_id.clone()),
    )
    .unwrap();
    let big = Signed {
        kind: PayloadKind::TicketEvent as i32,
        author: ROGUE.into(),
        payload: vec![7; 4 * 1024 * 1024],
        signature: vec![0; 64],
    };
    let err = PeeringClient::new(channel.clone())
        .max_encoding_message_size(64 * 1024 * 1024)
        .deliver(DeliverRequest {
            events: vec![big],
            contacts: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Random method names: answered UNIMPLEMENTED, counted as `unknown`.
    for i in 0..20 {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path: http::uri::PathAndQuery = format!("/urpnet.v1.Probe/Call{i:04}").parse().unwrap();
        let codec = tonic_prost::ProstCodec::<DeliverRequest, DeliverResponse>::default();
        let err = grpc
            .unary(tonic::Request::new(DeliverRequest::default()), path, codec)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    }
    let metrics = celano.metrics().await;
    assert!(
        !metrics.contains("Call00"),
        "a caller's path became a label"
    );
    assert!(
        metrics.contains("rpc=\"unknown\""),
        "unknown methods are counted under one label"
    );

    // A member over its rate: RESOURCE_EXHAUSTED with a retry hint, counted.
    let abruzzo = fed.node(ABRUZZO.id);
    let material = urpnet_proto::tls::TlsFiles::in_dir(&abruzzo.config.tls_dir())
        .load()
        .unwrap();
    let member = tls::channel_to(
        &endpoint,
        material.client_config().unwrap(),
        Duration::from_secs(5),
        Identity::Node(node_id),
    )
    .unwrap();
    let mut client = PeeringClient::new(member);
    let mut limited = None;
    for _ in 0..40 {
        let empty = DeliverRequest::default();
        if let Err(status) = client.deliver(empty).await
            && status.code() == Code::ResourceExhausted
        {
            limited = Some(status);
            break;
        }
    }
    let limited = limited.expect("40 calls at once exceed a burst of 5");
    let retry: u64 = limited
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a retry-after-ms hint");
    assert!((1..=1000).contains(&retry), "{retry}");
    // Its bucket refills: it is heard again once the hint has passed.
    wait_for(
        "the member's rate to allow a call again",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move { client.deliver(DeliverRequest::default()).await.ok() }
        },
    )
    .await;

    // An operator token over its rate, on the Desk.
    let mut desk = celano.desk().await;
    let mut desk_limited = false;
    for _ in 0..40 {
        let r = desk
            .list_tickets(urpnet_proto::v1::ListTicketsRequest::default())
            .await;
        if let Err(status) = r {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.metadata().get("retry-after-ms").is_some());
            desk_limited = true;
            break;
        }
    }
    assert!(desk_limited, "40 calls at once exceed a burst of 5");

    let after = celano.metrics().await;
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    assert!(delta("urpnet_peering_refused_total{reason=\"no_node_certificate\"}") >= 1.0);
    assert!(delta("urpnet_peering_refused_total{reason=\"rate_limited\"}") >= 1.0);
    assert!(delta("urpnet_rate_limited_total{port=\"desk\"}") >= 1.0);
}

/// A peer whose message limit is below the batches sent to it: the sender
/// halves its batches until they fit, so nothing stalls (before, one
/// oversized batch was refused with OUT_OF_RANGE forever and the peer got
/// nothing more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_for_the_peer_is_split_until_it_fits() {
    let mut fed = TestFederation::start(Backend::Sqlite, "split", &[CELANO, ABRUZZO], |c| {
        c.peering.max_message_bytes = if c.node.id.as_str() == CELANO.id {
            8 * 1024 * 1024
        } else {
            1024 * 1024
        };
    })
    .await
    .expect("sqlite");
    // The region is down while Celano works, so everything waits in one
    // outbox and leaves in as few batches as Celano's budget allows.
    let at = fed
        .nodes
        .iter()
        .position(|n| n.config.node.id.as_str() == ABRUZZO.id)
        .unwrap();
    let region_node = fed.nodes.remove(at);
    let region_config = region_node.config.clone();
    let region_dir = region_node.stop_keep_dir().await;
    let celano = fed.node(CELANO.id);
    let mut desk = celano.desk().await;
    // Twelve tickets of about 200 KB of notes each, offered to the region
    // together: about 2.4 MB queued for a peer that takes 1 MiB a message.
    let text = "Nota lunga del fascicolo. ".repeat(380);
    let mut tickets = Vec::new();
    for _ in 0..12 {
        let ticket = urpnet_tests::shared::create(
            &mut desk,
            urpnet_tests::shared::request("informazioni", true),
        )
        .await;
        for _ in 0..20 {
            desk.add_note(urpnet_proto::v1::AddNoteRequest {
                ticket_id: ticket.id.clone(),
                text: text.clone(),
                public: false,
            })
            .await
            .expect("note");
        }
        tickets.push(ticket.id);
    }
    let before = celano.metrics().await;
    for id in &tickets {
        desk.handoff(urpnet_proto::v1::HandoffRequest {
            ticket_id: id.clone(),
            to_node: ABRUZZO.id.into(),
            reason: "per competenza".into(),
            overflow: false,
        })
        .await
        .expect("offer");
    }
    let region_node = urpnet_tests::TestNode::start_with(region_config, region_dir).await;
    let region = region_node.desk().await;
    for id in &tickets {
        let held = wait_for(
            "the region to hold every note",
            Duration::from_secs(60),
            || {
                let region = region.clone();
                let id = id.clone();
                async move {
                    urpnet_tests::shared::get(&region, &id)
                        .await
                        .filter(|t| t.note_count == 20)
                }
            },
        )
        .await;
        assert_eq!(held.pending_handoff.unwrap().to_node, ABRUZZO.id);
    }
    let after = celano.metrics().await;
    let split = "urpnet_delivery_split_total{peer=\"r_abruzz\"}";
    assert!(counter(&after, split) - counter(&before, split) >= 1.0);
    region_node.stop().await;
}
