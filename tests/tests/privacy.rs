//! The citizen's rights at the origin: export what is held, erase the
//! contact here and at every body it was passed to, purge contacts past
//! their retention; every action audited without personal data.

use std::time::Duration;

use urpnet_proto::v1::{
    AnswerHandoffRequest, ChangeStatusRequest, GetTicketRequest, HandoffRequest, Status,
};
use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation};
use urpnet_tests::shared::{contact, request};
use urpnet_tests::{Backend, local_desk, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_at_the_origin_reaches_every_body_holding_the_contact() {
    let Some(federation) = TestFederation::start(
        Backend::Sqlite,
        "sqlite::privacy_erasure",
        &[CELANO, ABRUZZO],
        |_| {},
    )
    .await
    else {
        return;
    };
    let celano = federation.node("c_c426");
    let region = federation.node("r_abruzz");
    let mut desk = celano.desk().await;
    // Maria's regional request, with consent to pass her contact on.
    let ticket = desk
        .create_ticket(request("sanita.prenotazioni", true))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    desk.handoff(HandoffRequest {
        ticket_id: ticket.id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut region_desk = region.desk().await;
    wait_for("the offer at the Region", Duration::from_secs(20), || {
        let mut d = region_desk.clone();
        async move {
            let o = d
                .list_offers(urpnet_proto::v1::ListOffersRequest::default())
                .await
                .ok()?
                .into_inner();
            (!o.incoming.is_empty()).then_some(())
        }
    })
    .await;
    region_desk
        .accept_handoff(AnswerHandoffRequest {
            ticket_id: ticket.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    wait_for("the contact at the Region", Duration::from_secs(20), || {
        let d = region_desk.clone();
        let id = ticket.id.clone();
        async move { contact(&d, &id).await }
    })
    .await;

    // Export at the origin: her tickets and contact; the audit names nobody.
    let (local, store, writer) = local_desk(celano).await;
    let subject = urpnet_node::privacy::Subject {
        email: Some("MARIA.ROSSI@example.it".into()),
        ..Default::default()
    };
    let exported = urpnet_node::privacy::export(&local, &subject, "urp-celano")
        .await
        .unwrap();
    let tickets = exported["tickets"].as_array().unwrap();
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0]["reference"], ticket.reference.as_str());
    assert_eq!(tickets[0]["contact"]["full_name"], "Maria Rossi");
    assert_eq!(tickets[0]["consent"]["share_with_competent_body"], true);

    // Erasure: gone here at once, and at the Region when the event arrives.
    let erased = urpnet_node::privacy::erase(&local, &subject, "urp-celano")
        .await
        .unwrap();
    assert_eq!(erased, vec![ticket.reference.clone()]);
    assert!(
        contact(&desk, &ticket.id).await.is_none(),
        "erased at the origin"
    );
    wait_for(
        "the Region to delete its copy",
        Duration::from_secs(20),
        || {
            let d = region_desk.clone();
            let id = ticket.id.clone();
            async move {
                let t = d
                    .clone()
                    .get_ticket(GetTicketRequest {
                        ticket_id: id.clone(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                (t.citizen.is_none() && t.ticket?.contact_erased).then_some(())
            }
        },
    )
    .await;
    // Nothing left to export; the audit holds actions, not people.
    let again = urpnet_node::privacy::export(&local, &subject, "urp-celano")
        .await
        .unwrap();
    assert_eq!(again["tickets"].as_array().unwrap().len(), 0);
    let audit = urpnet_node::privacy::tables::recent(&store, 10)
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["export", "erase", "export"]);
    let text = format!("{audit:?}");
    assert!(
        !text.contains("maria") && !text.contains("MARIA") && !text.contains("Rossi"),
        "{text}"
    );
    // Without an identifier, nothing happens.
    let err = urpnet_node::privacy::erase(&local, &urpnet_node::privacy::Subject::default(), "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("subject"), "{err}");
    drop(local);
    store.close().await;
    drop(store);
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_of_tickets_closed_past_the_retention_are_purged() {
    let Some((dir, config)) =
        urpnet_tests::node_config("c_c426", Backend::Sqlite, "sqlite::privacy_purge").await
    else {
        return;
    };
    let node = urpnet_tests::TestNode::start_with(config, Some(dir)).await;
    let mut desk = node.desk().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let t = desk
            .create_ticket(request("anagrafe.certificati", false))
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        ids.push(t.id);
    }
    // Two closed, one still open.
    let mut closed_ms = 0;
    for id in &ids[..2] {
        for to in [Status::Resolved, Status::Closed] {
            let t = desk
                .change_status(ChangeStatusRequest {
                    ticket_id: id.clone(),
                    status: to as i32,
                    reason: String::new(),
                    merged_into: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap();
            closed_ms = closed_ms.max(urpnet_node::shared_ticket::fold::millis(
                t.updated_at.as_ref().unwrap(),
            ));
        }
    }
    let (local, store, writer) = local_desk(&node).await;
    // A retention of a day keeps them all; of zero, erases the closed ones.
    assert_eq!(
        urpnet_node::privacy::purge(&local, Duration::from_secs(86_400))
            .await
            .unwrap(),
        0
    );
    // A retention of zero covers what closed before now: let the clock pass
    // the last closure's millisecond.
    wait_for(
        "the clock to pass the closures",
        Duration::from_secs(5),
        || async move { (urpnet_proto::hlc::system_time_ms() > closed_ms).then_some(()) },
    )
    .await;
    assert_eq!(
        urpnet_node::privacy::purge(&local, Duration::ZERO)
            .await
            .unwrap(),
        2
    );
    assert!(contact(&desk, &ids[0]).await.is_none());
    assert!(contact(&desk, &ids[1]).await.is_none());
    assert!(
        contact(&desk, &ids[2]).await.is_some(),
        "an open ticket keeps its contact"
    );
    assert_eq!(
        urpnet_node::privacy::purge(&local, Duration::ZERO)
            .await
            .unwrap(),
        0,
        "done once"
    );
    let audit = urpnet_node::privacy::tables::recent(&store, 10)
        .await
        .unwrap();
    assert_eq!(audit[0].action, "purge");
    assert_eq!(audit[0].tickets, 2);
    drop(local);
    store.close().await;
    drop(store);
    writer.await.unwrap();
    node.stop().await;
}
