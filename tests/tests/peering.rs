//! Peering between real nodes and a real registry, in-process on loopback
//! with mutual TLS: handoffs offered, accepted, declined, shared; contacts
//! passed only under consent; tickets only at their participants.

use tonic::Code;
use urpnet_proto::v1::{
    AddNoteRequest, AnswerHandoffRequest, AssignTicketRequest, GetHistoryRequest, HandoffRequest,
    ListOffersRequest, ShareTicketRequest, Status,
};
use urpnet_tests::federation::{ABRUZZO, AVEZZANO, CELANO, TestFederation};
use urpnet_tests::shared::{
    DEADLINE, accept, contact, create, get, history, note, outbox_drained, request, status,
    wait_ticket,
};
use urpnet_tests::{Backend, wait_for};

urpnet_tests::on_both_backends!(
    a_regional_matter_is_handed_to_the_region_accepted_and_resolved,
    a_declined_offer_returns_the_ticket_to_the_offering_office,
    consent_passes_the_contact_sharing_is_read_only_and_overflow_finds_a_peer,
    offers_are_listed_a_page_at_a_time_in_order_without_loss,
);

/// Every offer on some page, once, oldest first, with its reason; a bad
/// page size or token is refused naming the field.
async fn offers_are_listed_a_page_at_a_time_in_order_without_loss(backend: Backend, test: &str) {
    let Some(fed) = TestFederation::start(backend, test, &[CELANO, ABRUZZO], |_| {}).await else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let mut celano = fed.node(CELANO.id).desk().await;
    let region = fed.node(ABRUZZO.id).desk().await;
    let mut offered = Vec::new();
    for i in 0..7 {
        let id = create(&mut celano, request("sanita.prenotazioni", false))
            .await
            .id;
        celano
            .handoff(HandoffRequest {
                ticket_id: id.clone(),
                to_node: ABRUZZO.id.into(),
                reason: format!("offer {i}"),
                ..Default::default()
            })
            .await
            .expect("handoff");
        offered.push(id);
    }
    // Pages of 3 of the offers made: 3 + 3 + 1, then no token.
    let page = |desk: &urpnet_node::cli::Desk, req: ListOffersRequest| {
        let mut desk = desk.clone();
        async move { desk.list_offers(req).await.map(tonic::Response::into_inner) }
    };
    let mut seen = Vec::new();
    let mut reasons = Vec::new();
    let mut r = page(
        &celano,
        ListOffersRequest {
            page_size: 3,
            ..Default::default()
        },
    )
    .await
    .expect("first page");
    let mut pages = 1;
    loop {
        assert!(r.outgoing.len() <= 3);
        assert!(r.incoming.is_empty(), "Celano was offered nothing");
        for o in &r.outgoing {
            seen.push(o.ticket.as_ref().expect("ticket").id.clone());
            reasons.push(o.reason.clone());
        }
        if r.next_outgoing_page_token.is_empty() {
            break;
        }
        pages += 1;
        r = page(
            &celano,
            ListOffersRequest {
                page_size: 3,
                outgoing_page_token: r.next_outgoing_page_token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("next page");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, offered, "every offer once, oldest first");
    assert_eq!(
        reasons,
        (0..7).map(|i| format!("offer {i}")).collect::<Vec<_>>()
    );

    // The region's inbox fills to all seven, read in pages of 5.
    wait_for("seven offers in the region's inbox", DEADLINE, || {
        let region = region.clone();
        async move {
            let r = page(
                &region,
                ListOffersRequest {
                    page_size: 5,
                    ..Default::default()
                },
            )
            .await
            .ok()?;
            let mut n = r.incoming.len();
            if r.next_incoming_page_token.is_empty() {
                return None;
            }
            let more = page(
                &region,
                ListOffersRequest {
                    page_size: 5,
                    incoming_page_token: r.next_incoming_page_token,
                    ..Default::default()
                },
            )
            .await
            .ok()?;
            assert!(more.outgoing.is_empty(), "only the inbox was asked for");
            n += more.incoming.len();
            (n == 7 && more.next_incoming_page_token.is_empty()).then_some(())
        }
    })
    .await;

    for (req, field) in [
        (
            ListOffersRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListOffersRequest {
                incoming_page_token: "not a token".into(),
                ..Default::default()
            },
            "incoming_page_token",
        ),
        (
            ListOffersRequest {
                outgoing_page_token: "bzEuMS5ub3RhbmlkCg".into(),
                ..Default::default()
            },
            "outgoing_page_token",
        ),
    ] {
        let err = page(&celano, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }
}

async fn a_regional_matter_is_handed_to_the_region_accepted_and_resolved(
    backend: Backend,
    test: &str,
) {
    let Some(fed) =
        TestFederation::start(backend, test, &[CELANO, ABRUZZO, AVEZZANO], |_| {}).await
    else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let mut celano = fed.node(CELANO.id).desk().await;
    let mut region = fed.node(ABRUZZO.id).desk().await;
    let avezzano = fed.node(AVEZZANO.id).desk().await;

    // A citizen calls Celano about a health booking: a regional matter.
    let ticket = create(&mut celano, request("sanita.prenotazioni", false)).await;
    let id = ticket.id.clone();
    // No target given: the registry's Route names the competent body.
    let resp = celano
        .handoff(HandoffRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("handoff")
        .into_inner();
    assert_eq!(resp.to_node, ABRUZZO.id, "{}", resp.decided_by);
    assert!(!resp.decided_by.is_empty());
    let offered = resp.ticket.expect("ticket");
    assert_eq!(
        offered.owner_node, CELANO.id,
        "ownership moves only on accept"
    );
    assert_eq!(
        offered.pending_handoff.as_ref().map(|p| p.to_node.as_str()),
        Some(ABRUZZO.id)
    );
    // A second offer while one is pending is refused.
    let again = celano
        .handoff(HandoffRequest {
            ticket_id: id.clone(),
            to_node: AVEZZANO.id.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

    // The offer arrives in the region's inbox.
    let inbox = wait_for("the offer in the region's inbox", DEADLINE, || {
        let mut region = region.clone();
        let id = id.clone();
        async move {
            let offers = region
                .list_offers(ListOffersRequest::default())
                .await
                .ok()?
                .into_inner();
            offers
                .incoming
                .into_iter()
                .find(|o| o.ticket.as_ref().is_some_and(|t| t.id == id))
        }
    })
    .await;
    assert_eq!(inbox.from_node, CELANO.id);
    assert_eq!(inbox.reason, resp.decided_by);
    // Celano may not answer its own offer; the region may not yet act as owner.
    let err = celano
        .accept_handoff(AnswerHandoffRequest {
            ticket_id: id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = status(&mut region, &id, Status::InProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    let accepted = accept(&mut region, &id).await;
    assert_eq!(accepted.owner_node, ABRUZZO.id);
    assert_eq!(accepted.owner_epoch, 1);
    wait_ticket("Celano to see the new owner", &celano, &id, |t| {
        t.owner_node == ABRUZZO.id
    })
    .await;
    // The previous owner can no longer change the status.
    let err = status(&mut celano, &id, Status::InProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // The region works it; Celano, the origin, follows every step.
    region
        .assign_ticket(AssignTicketRequest {
            ticket_id: id.clone(),
            office: "cup-regionale".into(),
        })
        .await
        .expect("assign");
    status(&mut region, &id, Status::InProgress)
        .await
        .expect("in progress");
    region
        .add_note(AddNoteRequest {
            ticket_id: id.clone(),
            public: true,
            text: "Prenotabile al numero verde CUP o in farmacia".into(),
        })
        .await
        .expect("note");
    celano
        .add_note(AddNoteRequest {
            ticket_id: id.clone(),
            public: false,
            text: "La cittadina ha richiamato".into(),
        })
        .await
        .expect("origin's note");
    status(&mut region, &id, Status::Resolved)
        .await
        .expect("resolved");
    let at_origin = wait_ticket("the resolution at Celano", &celano, &id, |t| {
        t.status() == Status::Resolved && t.note_count == 2
    })
    .await;
    let at_region = wait_ticket("both notes at the region", &region, &id, |t| {
        t.note_count == 2
    })
    .await;
    // Both sides hold the same events and fold them to the same ticket.
    assert_eq!(at_origin, at_region);
    assert_eq!(history(&celano, &id).await, history(&region, &id).await);
    assert_eq!(at_origin.participants, vec![CELANO.id, ABRUZZO.id]);

    // Participants only: Avezzano never received it.
    assert!(get(&avezzano, &id).await.is_none());
    // Personal data stays home without consent.
    assert!(contact(&celano, &id).await.is_some());
    assert!(contact(&region, &id).await.is_none());

    // Delivery status per peer: reachable, nothing waiting.
    let peers = outbox_drained(&celano, false, DEADLINE).await;
    let row = peers
        .iter()
        .find(|p| p.peer == ABRUZZO.id)
        .expect("region row");
    assert_eq!(row.reachable, Some(true));
    assert_eq!(row.member_status, "active");
    assert!(row.delivered >= 3, "{row:?}");
}

async fn a_declined_offer_returns_the_ticket_to_the_offering_office(backend: Backend, test: &str) {
    let Some(fed) = TestFederation::start(backend, test, &[CELANO, AVEZZANO], |_| {}).await else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let mut celano = fed.node(CELANO.id).desk().await;
    let mut avezzano = fed.node(AVEZZANO.id).desk().await;
    let ticket = create(&mut celano, request("rifiuti.ingombranti", true)).await;
    let id = ticket.id;
    celano
        .handoff(HandoffRequest {
            ticket_id: id.clone(),
            to_node: AVEZZANO.id.into(),
            reason: "Il ritiro riguarda un indirizzo di Avezzano".into(),
            overflow: false,
        })
        .await
        .expect("offer");
    wait_ticket("the offer at Avezzano", &avezzano, &id, |t| {
        t.pending_handoff.is_some()
    })
    .await;
    // Declining needs a reason.
    let err = avezzano
        .decline_handoff(AnswerHandoffRequest {
            ticket_id: id.clone(),
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reason"), "{err:?}");
    avezzano
        .decline_handoff(AnswerHandoffRequest {
            ticket_id: id.clone(),
            reason: "Indirizzo nel comune di Celano".into(),
        })
        .await
        .expect("decline");
    let back = wait_ticket("the decline at Celano", &celano, &id, |t| {
        t.pending_handoff.is_none()
    })
    .await;
    assert_eq!(back.owner_node, CELANO.id);
    assert_eq!(back.handoff_count, 0);
    // The decline and its reason are in Celano's history.
    let entries = celano
        .get_history(GetHistoryRequest {
            ticket_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let declined = entries
        .iter()
        .filter_map(|e| e.event.as_ref())
        .find_map(|e| match &e.kind {
            Some(urpnet_proto::v1::ticket_event::Kind::HandoffDeclined(d)) => Some(d.clone()),
            _ => None,
        })
        .expect("declined event");
    assert_eq!(declined.reason, "Indirizzo nel comune di Celano");
    assert!(
        entries.iter().all(|e| e.signature_valid),
        "every signature verifies"
    );
    // Nothing pending any more on either side; Celano works it itself.
    let offers = celano
        .list_offers(ListOffersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(offers.outgoing.is_empty() && offers.incoming.is_empty());
    status(&mut celano, &id, Status::InProgress)
        .await
        .expect("Celano still owns it");
    // No ownership moved, so the contact never left Celano despite consent.
    assert!(get(&avezzano, &id).await.is_some());
    assert!(contact(&avezzano, &id).await.is_none());

    // Shared read-only with Avezzano: it receives the ticket but may not act.
    let share = celano
        .share_ticket(ShareTicketRequest {
            ticket_id: id.clone(),
            with_node: AVEZZANO.id.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        share.code(),
        Code::FailedPrecondition,
        "already a participant: {share:?}"
    );
    let err = status(&mut avezzano, &id, Status::Resolved)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

async fn consent_passes_the_contact_sharing_is_read_only_and_overflow_finds_a_peer(
    backend: Backend,
    test: &str,
) {
    let Some(fed) = TestFederation::start(backend, test, &[CELANO, ABRUZZO, AVEZZANO], |c| {
        if c.node.id.as_str() == AVEZZANO.id {
            c.registry.overflow_categories = vec!["informazioni".into()];
            c.registry.capacity_per_hour = 60;
            c.registry.operators_on_duty = 3;
        }
    })
    .await
    else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let mut celano = fed.node(CELANO.id).desk().await;
    let mut region = fed.node(ABRUZZO.id).desk().await;
    let mut avezzano = fed.node(AVEZZANO.id).desk().await;

    // With consent, the origin passes the contact to the new owner.
    let ticket = create(&mut celano, request("sanita.prenotazioni", true)).await;
    let id = ticket.id.clone();
    celano
        .handoff(HandoffRequest {
            ticket_id: id.clone(),
            to_node: ABRUZZO.id.into(),
            ..Default::default()
        })
        .await
        .expect("offer");
    wait_ticket("the offer at the region", &region, &id, |t| {
        t.pending_handoff.is_some()
    })
    .await;
    accept(&mut region, &id).await;
    let passed = wait_for("the contact at the region", DEADLINE, || {
        contact(&region, &id)
    })
    .await;
    assert_eq!(passed.full_name, "Maria Rossi");

    // Shared read-only with Avezzano: the ticket arrives, the contact does
    // not; Avezzano may add a note but not act as owner.
    region
        .share_ticket(ShareTicketRequest {
            ticket_id: id.clone(),
            with_node: AVEZZANO.id.into(),
        })
        .await
        .expect("share");
    let shared = wait_ticket("the shared ticket at Avezzano", &avezzano, &id, |_| true).await;
    assert_eq!(
        shared.participants,
        vec![AVEZZANO.id, CELANO.id, ABRUZZO.id]
    );
    assert!(
        contact(&avezzano, &id).await.is_none(),
        "a shared body gets no personal data"
    );
    let err = status(&mut avezzano, &id, Status::Resolved)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    note(
        &mut avezzano,
        &id,
        "Segnalato anche allo sportello di Avezzano",
    )
    .await;
    for desk in [&celano, &region] {
        wait_ticket("Avezzano's note everywhere", desk, &id, |t| {
            t.note_count == 1
        })
        .await;
    }
    assert_eq!(history(&celano, &id).await, history(&avezzano, &id).await);

    // Overflow: Celano asks the registry for a peer with spare capacity for
    // general information requests; Avezzano is the only one taking them.
    let info = create(&mut celano, request("informazioni", false)).await;
    let resp = wait_for("a peer accepting overflow", DEADLINE, || {
        let mut celano = celano.clone();
        let id = info.id.clone();
        async move {
            celano
                .handoff(HandoffRequest {
                    ticket_id: id,
                    overflow: true,
                    ..Default::default()
                })
                .await
                .ok()
        }
    })
    .await
    .into_inner();
    assert_eq!(resp.to_node, AVEZZANO.id, "{}", resp.decided_by);
    assert!(
        resp.decided_by.starts_with("overflow"),
        "{}",
        resp.decided_by
    );
    wait_ticket("the overflow offer", &avezzano, &info.id, |t| {
        t.pending_handoff.is_some()
    })
    .await;
    let at_avezzano = accept(&mut avezzano, &info.id).await;
    assert_eq!(at_avezzano.owner_node, AVEZZANO.id);
}
