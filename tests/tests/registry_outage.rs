//! The registry gone (issue 19), with real processes: a registry and two
//! nodes run as child processes; the registry is killed and stays down
//! while the nodes, one of them restarted in the middle of the outage, go
//! on working from their cached member list and taxonomy: handoffs to a
//! named body, accept, notes, FAQ and charter spread, an appointment booked
//! at the other body. `Route` answers UNAVAILABLE
//! saying the registry is unreachable and how to name a body; a revocation
//! made just before the outage still holds; health and metrics show the
//! registry unreachable; archive records queue and, when the registry comes
//! back on the same address, arrive exactly once.
//!
//! Nothing in a node expires with the length of an outage (the cached
//! member list and taxonomy have no age limit; the federation certificate
//! lasts months and is renewed only through the registry), so an outage of
//! seconds here exercises the same code as one of a day.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use urpnet_proto::v1::{ArchiveStatusRequest, HandoffRequest, MemberStatus, SetStatusRequest};
use urpnet_tests::archive::{ProcessRegistry, close_tickets, stats, wait_records};
use urpnet_tests::federation::{ABRUZZO, AVEZZANO, CELANO, SAMPLE_TAXONOMY, TestRegistry, counter};
use urpnet_tests::shared::{
    DEADLINE, converged, create, handed_over, note, publish, request, sample_charter, sample_faqs,
    sample_plans, wait_cached_members, wait_found,
};
use urpnet_tests::{Backend, ProcessNode, http_get, node_config, wait_for};

async fn registry_health(node: &ProcessNode) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.desk_addr))
        .ok()?
        .connect()
        .await
        .ok()?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: urpnet_node::registry_link::REGISTRY_HEALTH.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

async fn wait_health(node: &ProcessNode, want: ServingStatus) {
    wait_for(&format!("registry health {want:?}"), DEADLINE, || async {
        (registry_health(node).await == Some(want as i32)).then_some(())
    })
    .await;
}

async fn archive_status(
    archive: &mut urpnet_node::cli::archive::ArchiveDesk,
) -> Option<urpnet_proto::v1::ArchiveStatusResponse> {
    archive
        .archive_status(ArchiveStatusRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

async fn faq(node: &ProcessNode) -> urpnet_tests::shared::Faq {
    let (channel, token) =
        urpnet_node::cli::channel_with_token(&node.desk_addr.to_string(), &node.token)
            .await
            .expect("connect");
    urpnet_proto::v1::faq_desk_client::FaqDeskClient::with_interceptor(channel, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_working_while_the_registry_is_down() {
    let Some((_rdir, mut rconfig)) = TestRegistry::config(Backend::Sqlite, "outage_registry").await
    else {
        return;
    };
    rconfig.membership.heartbeat_interval = Duration::from_millis(200);
    let registry = ProcessRegistry::start(&rconfig).await;
    let mut admin = urpnet_proto::v1::registry_admin_client::RegistryAdminClient::new(
        registry.coordinator_channel(),
    );
    admin
        .import_taxonomy(urpnet_proto::v1::ImportTaxonomyRequest {
            toml: SAMPLE_TAXONOMY.into(),
        })
        .await
        .expect("taxonomy");
    let mut configs = Vec::new();
    let mut dirs = Vec::new();
    for office in [CELANO, ABRUZZO, AVEZZANO] {
        let (dir, mut config) =
            node_config(office.id, Backend::Sqlite, &format!("outage_{}", office.id))
                .await
                .expect("config");
        config.archive.interval = Duration::from_millis(100);
        config.faq.interval = Duration::from_millis(500);
        config.peering.max_backoff = Duration::from_millis(500);
        config.metrics.listen = urpnet_examples::federation::free_port_below_ephemeral()
            .expect("port")
            .to_string();
        urpnet_examples::federation::enrol_node(
            &mut admin,
            &registry.endpoint(),
            &mut config,
            office.level,
            office.territory,
        )
        .await
        .expect("enrol");
        configs.push(config);
        dirs.push(dir);
    }
    let (celano_config, region_config) = (configs[0].clone(), configs[1].clone());
    let mut celano = ProcessNode::start(&celano_config).await;
    let region = ProcessNode::start(&region_config).await;
    for config in [&celano_config, &region_config] {
        wait_cached_members(&config.node.data_dir, &[CELANO.id, ABRUZZO.id, AVEZZANO.id]).await;
    }
    wait_health(&celano, ServingStatus::Serving).await;

    // Just before the outage: Avezzano is revoked, and three tickets closed
    // at Celano reach the archive.
    admin
        .set_status(SetStatusRequest {
            id: AVEZZANO.id.into(),
            status: MemberStatus::Revoked as i32,
            reason: "certificate compromised".into(),
        })
        .await
        .expect("revoke");
    for config in [&celano_config, &region_config] {
        let dir = config.node.data_dir.clone();
        wait_for(
            "the revocation in the cache",
            Duration::from_secs(30),
            || {
                let dir = dir.clone();
                async move {
                    let m = urpnet_node::registry_link::load_cache(&dir).0?;
                    (!m.is_active(AVEZZANO.id)).then_some(())
                }
            },
        )
        .await;
    }
    let archive_admin = registry.admin();
    close_tickets(&mut celano.desk().await, 3, "informazioni").await;
    wait_records(&archive_admin, 3, Duration::from_secs(30)).await;

    // The registry goes down.
    let rconfig = registry.kill9().await;
    wait_health(&celano, ServingStatus::NotServing).await;
    let metrics_addr: std::net::SocketAddr = celano_config.metrics.listen.parse().unwrap();
    let m = http_get(metrics_addr, "/metrics").await;
    assert_eq!(counter(&m, "urpnet_node_registry_reachable "), 0.0, "{m}");
    // A node restarted during the outage starts from its cache.
    celano.kill9().await;
    celano = ProcessNode::start(&celano_config).await;
    wait_health(&celano, ServingStatus::NotServing).await;
    let mut desk = celano.desk().await;
    let mut region_desk = region.desk().await;

    // Route cannot be asked: a clear answer, at once.
    let ticket = create(&mut desk, request("sanita.prenotazioni", false)).await;
    let started = std::time::Instant::now();
    let err = desk
        .handoff(HandoffRequest {
            ticket_id: ticket.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("registry is unreachable") && err.message().contains("to_node"),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at once"
    );
    // The revocation holds from the cache.
    let err = desk
        .handoff(HandoffRequest {
            ticket_id: ticket.id.clone(),
            to_node: AVEZZANO.id.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not an active member"), "{err:?}");

    // Named handoff, accept, notes from both sides: all without the registry.
    let handed = handed_over(
        &mut desk,
        &mut region_desk,
        ABRUZZO.id,
        "sanita.prenotazioni",
    )
    .await;
    note(
        &mut region_desk,
        &handed.id,
        "presa in carico durante il fermo del registro",
    )
    .await;
    note(&mut desk, &handed.id, "il cittadino ha richiamato").await;
    converged(&desk, &region_desk, &handed.id, DEADLINE).await;
    // The FAQ set spreads peer to peer.
    let content = sample_faqs("regione").into_iter().next().expect("a sample");
    let question = content.question.clone();
    let key = publish(&mut faq(&region).await, content).await;
    wait_found(&faq(&celano).await, &question, &key, 1).await;

    // The Region publishes its charter and booking plans during the
    // outage: the charter spreads, and Celano books a caller at the Region.
    let (channel, token) =
        urpnet_node::cli::channel_with_token(&region.desk_addr.to_string(), &region.token)
            .await
            .unwrap();
    urpnet_proto::v1::charter_desk_client::CharterDeskClient::with_interceptor(
        channel.clone(),
        token.clone(),
    )
    .max_encoding_message_size(64 << 20)
    .import_charter(urpnet_proto::v1::ImportCharterRequest {
        charter: Some(sample_charter("regione-abruzzo")),
    })
    .await
    .expect("charter");
    urpnet_proto::v1::appointment_desk_client::AppointmentDeskClient::with_interceptor(
        channel, token,
    )
    .set_plans(urpnet_proto::v1::SetPlansRequest {
        plans: sample_plans("regione-abruzzo"),
        dry_run: false,
    })
    .await
    .expect("plans");
    let (channel, token) =
        urpnet_node::cli::channel_with_token(&celano.desk_addr.to_string(), &celano.token)
            .await
            .unwrap();
    let charters = urpnet_proto::v1::charter_desk_client::CharterDeskClient::with_interceptor(
        channel.clone(),
        token.clone(),
    )
    .max_decoding_message_size(64 << 20);
    wait_for("the Region's charter at Celano", DEADLINE, || {
        let mut charters = charters.clone();
        async move {
            let list = charters
                .list_charters(urpnet_proto::v1::ListChartersRequest {})
                .await
                .ok()?
                .into_inner();
            list.charters
                .iter()
                .any(|c| c.body == ABRUZZO.id)
                .then_some(())
        }
    })
    .await;
    let appointments =
        urpnet_proto::v1::appointment_desk_client::AppointmentDeskClient::with_interceptor(
            channel, token,
        );
    let ask = urpnet_proto::v1::FreeSlotsRequest {
        body: ABRUZZO.id.into(),
        office: "urp-avezzano".into(),
        service: "tessera-sanitaria".into(),
        limit: 3,
        ..Default::default()
    };
    let slots = wait_for("the Region's free slots from Celano", DEADLINE, || {
        let mut appointments = appointments.clone();
        let ask = ask.clone();
        async move {
            let r = appointments.free_slots(ask).await.ok()?.into_inner();
            (!r.slots.is_empty()).then_some(r)
        }
    })
    .await;
    let booked = appointments
        .clone()
        .book(urpnet_proto::v1::BookRequest {
            body: ABRUZZO.id.into(),
            idempotency_key: "outage-call-1".into(),
            office: "urp-avezzano".into(),
            service: "tessera-sanitaria".into(),
            start: slots.slots[0].start.clone(),
            channel: "desk".into(),
            citizen: Some(urpnet_proto::v1::AppointmentCitizen {
                given_name: "Mario".into(),
                family_name: "Di Pietro".into(),
                email: "mario.dipietro@example.it".into(),
                address: "Via Roma 3, 67043 Celano (AQ)".into(),
                phone: "0863 123456".into(),
            }),
            consent_processing: true,
            consent_share: true,
            ..Default::default()
        })
        .await
        .expect("booked at the Region without the registry")
        .into_inner();
    assert_eq!(booked.appointment.expect("appointment").body, ABRUZZO.id);

    // Archive records queue while the registry is away.
    close_tickets(&mut desk, 4, "informazioni").await;
    let (channel, token) =
        urpnet_node::cli::channel_with_token(&celano.desk_addr.to_string(), &celano.token)
            .await
            .unwrap();
    let archive =
        urpnet_proto::v1::archive_desk_client::ArchiveDeskClient::with_interceptor(channel, token);
    let queued = wait_for("four records queued", DEADLINE, || {
        let mut archive = archive.clone();
        async move {
            let s = archive_status(&mut archive).await?;
            (s.made == 7 && s.pending == 4).then_some(s)
        }
    })
    .await;
    assert_eq!(queued.sent, 3);

    // The registry returns on the same address: the queue drains exactly
    // once, health and metrics say so.
    let registry = ProcessRegistry::start(&rconfig).await;
    wait_health(&celano, ServingStatus::Serving).await;
    let s = wait_records(&registry.admin(), 7, Duration::from_secs(30)).await;
    assert_eq!(s.records, 7);
    wait_for("all records acknowledged", DEADLINE, || {
        let mut archive = archive.clone();
        async move {
            let s = archive_status(&mut archive).await?;
            (s.made == 7 && s.sent == 7 && s.pending == 0).then_some(())
        }
    })
    .await;
    // Still exactly seven once everything was pushed.
    assert_eq!(stats(&registry.admin()).await.expect("stats").records, 7);
    let m = http_get(metrics_addr, "/metrics").await;
    assert_eq!(counter(&m, "urpnet_node_registry_reachable "), 1.0, "{m}");
    drop(dirs);
}
