//! The Desk API of one node, end to end over gRPC on loopback, on SQLite and
//! on PostgreSQL (skipped, saying so, when CI gave no PostgreSQL URL).

use std::collections::HashSet;

use prost::Message as _;
use rand::SeedableRng as _;
use tonic::Code;
use urpnet_examples::samples;
use urpnet_node::cli::Desk;
use urpnet_node::shared_ticket::fold::{self, millis};
use urpnet_proto::v1::{
    AddNoteRequest, AssignTicketRequest, AttachmentUpload, ChangeStatusRequest, Channel,
    Coordinates, CreateTicketRequest, GetAttachmentRequest, GetHistoryRequest, GetTicketRequest,
    ListTicketsRequest, Location, Status, Ticket,
};
use urpnet_tests::shared::create;
use urpnet_tests::{Backend, TestNode, node_config};

urpnet_tests::on_both_backends!(
    a_ticket_walks_its_lifecycle_and_its_history_is_the_fold,
    creation_is_idempotent_on_the_request_id,
    bad_input_is_refused_naming_field_and_rule_and_stores_nothing,
    listing_filters_and_pages_through_everything_once,
    possible_duplicates_are_suggested,
    attachments_are_stored_once_by_sha256,
    roles_limit_what_a_token_may_do,
    a_restarted_node_keeps_everything_and_continues_references,
);

fn request(subject: &str) -> CreateTicketRequest {
    CreateTicketRequest {
        request_id: format!("test-{}", ulid::Ulid::new()),
        category: "illuminazione".into(),
        channel: Channel::Phone as i32,
        subject: subject.into(),
        description: "Tre lampioni spenti in via Sparano".into(),
        location: Some(Location {
            istat_code: "072006".into(),
            address: "Via Sparano 1".into(),
            coordinates: None,
        }),
        ..Default::default()
    }
}

async fn status(
    desk: &mut Desk,
    id: &str,
    to: Status,
    reason: &str,
) -> Result<Ticket, tonic::Status> {
    let req = ChangeStatusRequest {
        ticket_id: id.into(),
        status: to as i32,
        reason: reason.into(),
        merged_into: String::new(),
    };
    desk.change_status(req)
        .await
        .map(|r| r.into_inner().ticket.expect("ticket"))
}

async fn count(desk: &mut Desk) -> usize {
    let req = ListTicketsRequest {
        page_size: 500,
        ..Default::default()
    };
    desk.list_tickets(req)
        .await
        .expect("list")
        .into_inner()
        .tickets
        .len()
}

async fn a_ticket_walks_its_lifecycle_and_its_history_is_the_fold(backend: Backend, test: &str) {
    let Some(node) = TestNode::start("c_a662", backend, test).await else {
        return;
    };
    let mut desk = node.desk().await;
    let ticket = create(&mut desk, request("Lampioni spenti")).await;
    assert_eq!(ticket.status(), Status::New);
    assert!(
        ticket.reference.starts_with("c_a662-20"),
        "{}",
        ticket.reference
    );
    assert_eq!(ticket.origin_node, "c_a662");
    assert!(ticket.due_at.is_some(), "the default due date applies");

    let assigned = desk
        .assign_ticket(AssignTicketRequest {
            ticket_id: ticket.id.clone(),
            office: "ufficio-illuminazione".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(assigned.status(), Status::Assigned);
    assert_eq!(assigned.office, "ufficio-illuminazione");
    status(&mut desk, &ticket.id, Status::InProgress, "")
        .await
        .unwrap();
    desk.add_note(AddNoteRequest {
        ticket_id: ticket.id.clone(),
        public: false,
        text: "Segnalato al gestore".into(),
    })
    .await
    .unwrap();
    desk.add_note(AddNoteRequest {
        ticket_id: ticket.id.clone(),
        public: true,
        text: "Intervento programmato".into(),
    })
    .await
    .unwrap();
    status(&mut desk, &ticket.id, Status::Resolved, "lampioni riparati")
        .await
        .unwrap();
    let closed = status(&mut desk, &ticket.id, Status::Closed, "")
        .await
        .unwrap();
    assert_eq!(closed.status(), Status::Closed);
    assert!(closed.closed_at.is_some());
    assert_eq!(closed.note_count, 2);
    assert_eq!(closed.event_count, 7);

    // A closed ticket cannot move again, and the refusal stores nothing.
    let err = status(&mut desk, &ticket.id, Status::InProgress, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("status: may not change from closed to in_progress"),
        "{}",
        err.message()
    );

    let by_reference = desk
        .get_ticket(GetTicketRequest {
            ticket_id: String::new(),
            reference: ticket.reference.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(by_reference, closed);

    let history = desk
        .get_history(GetHistoryRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 7);
    assert!(
        history
            .entries
            .iter()
            .all(|e| e.effective && e.signature_valid)
    );
    // The materialised state is exactly the fold of the history's events,
    // whatever order they are given in.
    let mut events: Vec<_> = history
        .entries
        .into_iter()
        .map(|e| e.event.unwrap())
        .collect();
    events.reverse();
    assert_eq!(fold::fold(events).ticket.as_ref(), Some(&closed));
    node.stop().await;
}

async fn creation_is_idempotent_on_the_request_id(backend: Backend, test: &str) {
    let Some(node) = TestNode::start("c_a662", backend, test).await else {
        return;
    };
    let mut desk = node.desk().await;
    let req = request("Richiesta ripetuta");
    let first = desk.create_ticket(req.clone()).await.unwrap().into_inner();
    assert!(!first.replayed);
    let again = desk.create_ticket(req.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(again.ticket, first.ticket);

    let mut changed = req.clone();
    changed.subject = "Un'altra cosa".into();
    let err = desk.create_ticket(changed).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("request_id"), "{}", err.message());

    // Twenty concurrent retries of one new request make exactly one ticket.
    let burst = request("Stessa richiesta da rete instabile");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (mut d, r) = (desk.clone(), burst.clone());
        tasks.push(tokio::spawn(async move {
            d.create_ticket(r).await.unwrap().into_inner()
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let resp = t.await.unwrap();
        ids.insert(resp.ticket.unwrap().id);
        fresh += usize::from(!resp.replayed);
    }
    assert_eq!(ids.len(), 1, "one ticket for one request id");
    assert_eq!(fresh, 1, "exactly one response is the original");
    assert_eq!(count(&mut desk).await, 2);
    node.stop().await;
}

async fn bad_input_is_refused_naming_field_and_rule_and_stores_nothing(
    backend: Backend,
    test: &str,
) {
    let Some((dir, mut config)) = node_config("c_a662", backend, test).await else {
        return;
    };
    config.desk.max_message_bytes = 1024 * 1024;
    config.attachments.max_bytes = 256 * 1024;
    let node = TestNode::start_with(config, Some(dir)).await;
    let mut desk = node.desk().await;
    let good = create(&mut desk, request("Una richiesta valida")).await;

    type Mutate = Box<dyn Fn(&mut CreateTicketRequest)>;
    let cases: Vec<(&str, &str, Mutate)> = vec![
        (
            "request_id",
            "is required",
            Box::new(|r| r.request_id.clear()),
        ),
        (
            "request_id",
            "8..=64",
            Box::new(|r| r.request_id = "x".repeat(65)),
        ),
        (
            "category",
            "unknown category",
            Box::new(|r| r.category = "oroscopo".into()),
        ),
        ("channel", "must be one of", Box::new(|r| r.channel = 0)),
        ("channel", "must be one of", Box::new(|r| r.channel = 77)),
        ("subject", "is required", Box::new(|r| r.subject.clear())),
        (
            "subject",
            "3..=200",
            Box::new(|r| r.subject = "s".repeat(201)),
        ),
        (
            "description",
            "at most 10000",
            Box::new(|r| r.description = "d".repeat(10_001)),
        ),
        (
            "location.istat_code",
            "is required",
            Box::new(|r| r.location = None),
        ),
        (
            "location.istat_code",
            "existing comune",
            Box::new(|r| r.location.as_mut().unwrap().istat_code = "000000".into()),
        ),
        (
            "location.coordinates.latitude",
            "-90..=90",
            Box::new(|r| {
                r.location.as_mut().unwrap().coordinates = Some(Coordinates {
                    latitude: -91.0,
                    longitude: 0.0,
                })
            }),
        ),
        (
            "location.coordinates.longitude",
            "-180..=180",
            Box::new(|r| {
                r.location.as_mut().unwrap().coordinates = Some(Coordinates {
                    latitude: 0.0,
                    longitude: 181.0,
                })
            }),
        ),
        (
            "attachments[0].content",
            "at most 262144 bytes",
            Box::new(|r| {
                r.attachments.push(AttachmentUpload {
                    file_name: "foto.jpg".into(),
                    media_type: "image/jpeg".into(),
                    content: vec![7; 256 * 1024 + 1],
                })
            }),
        ),
        (
            "attachments[0].media_type",
            "must be one of",
            Box::new(|r| {
                r.attachments.push(AttachmentUpload {
                    file_name: "virus.exe".into(),
                    media_type: "application/x-msdownload".into(),
                    content: vec![1, 2],
                })
            }),
        ),
    ];
    for (field, rule, mutate) in &cases {
        let mut req = request("Richiesta da rifiutare");
        mutate(&mut req);
        let err = desk.create_ticket(req).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{field}: {}",
            err.message()
        );
        assert!(
            err.message().contains(&format!("{field}: ")) && err.message().contains(rule),
            "{field}/{rule}: {}",
            err.message()
        );
    }

    let id = good.id.clone();
    let err = desk
        .get_ticket(GetTicketRequest {
            ticket_id: "not-a-ulid".into(),
            reference: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("ticket_id: must be a ULID"),
        "{}",
        err.message()
    );
    let err = desk
        .list_tickets(ListTicketsRequest {
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("page_token: is malformed"),
        "{}",
        err.message()
    );
    let err = desk
        .list_tickets(ListTicketsRequest {
            territory: "9999".into(),
            statuses: vec![42],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("territory: ") && err.message().contains("statuses[0]: "),
        "{}",
        err.message()
    );
    let err = desk
        .add_note(AddNoteRequest {
            ticket_id: id.clone(),
            public: true,
            text: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("text: is required"),
        "{}",
        err.message()
    );
    let err = desk
        .assign_ticket(AssignTicketRequest {
            ticket_id: id.clone(),
            office: "Ufficio Tributi!".into(),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("office: must match"),
        "{}",
        err.message()
    );
    let err = status(&mut desk, &id, Status::Closed, "")
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("status: may not change from new to closed"),
        "{}",
        err.message()
    );
    let err = status(&mut desk, &id, Status::Rejected, "")
        .await
        .unwrap_err();
    assert!(
        err.message().contains("reason: is required when rejecting"),
        "{}",
        err.message()
    );
    let err = desk
        .get_ticket(GetTicketRequest {
            ticket_id: ulid::Ulid::new().to_string(),
            reference: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A message over the limit is refused before it is decoded.
    let mut huge = request("Allegato enorme");
    huge.attachments.push(AttachmentUpload {
        file_name: "scan.pdf".into(),
        media_type: "application/pdf".into(),
        content: vec![0; 2 * 1024 * 1024],
    });
    let mut big_client =
        urpnet_node::cli::connect(&node.desk_addr.to_string(), &node.token, 8 * 1024 * 1024)
            .await
            .unwrap();
    let err = big_client.create_ticket(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());

    // Nothing of the above was stored, and the good ticket is untouched.
    assert_eq!(count(&mut desk).await, 1);
    let after = desk
        .get_ticket(GetTicketRequest {
            ticket_id: id.clone(),
            reference: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.ticket.unwrap().encode_to_vec(), good.encode_to_vec());
    node.stop().await;
}

async fn listing_filters_and_pages_through_everything_once(backend: Backend, test: &str) {
    let Some(node) = TestNode::start("c_a662", backend, test).await else {
        return;
    };
    let mut desk = node.desk().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let comuni = ["072006", "072004", "058091", "066032"];
    let mut made = Vec::new();
    for i in 0..40 {
        let channel = samples::CHANNELS[i % samples::CHANNELS.len()];
        let req = samples::request(&mut rng, comuni[i % comuni.len()], channel);
        made.push(create(&mut desk, req).await);
    }
    status(&mut desk, &made[0].id, Status::InProgress, "")
        .await
        .unwrap();

    // Pages of 7 visit every ticket exactly once, newest first.
    let mut seen = Vec::new();
    let mut req = ListTicketsRequest {
        page_size: 7,
        ..Default::default()
    };
    loop {
        let page = desk.list_tickets(req.clone()).await.unwrap().into_inner();
        assert!(page.tickets.len() <= 7);
        seen.extend(page.tickets.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    let mut expected: Vec<_> = made.iter().map(|t| t.id.clone()).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(seen, expected);

    // A page token is bound to its filters.
    let first = desk
        .list_tickets(ListTicketsRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = desk
        .list_tickets(ListTicketsRequest {
            page_size: 5,
            category: "rifiuti".into(),
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("page_token: was issued for different filters"),
        "{}",
        err.message()
    );

    async fn ids(desk: &mut Desk, req: ListTicketsRequest) -> HashSet<String> {
        let req = ListTicketsRequest {
            page_size: 500,
            ..req
        };
        desk.list_tickets(req)
            .await
            .unwrap()
            .into_inner()
            .tickets
            .into_iter()
            .map(|t| t.id)
            .collect()
    }
    let expect = |pred: &dyn Fn(&Ticket) -> bool| {
        made.iter()
            .filter(|t| pred(t))
            .map(|t| t.id.clone())
            .collect::<HashSet<_>>()
    };

    let istat = |t: &Ticket| t.location.as_ref().unwrap().istat_code.clone();
    type Expected = Box<dyn Fn(&Ticket) -> bool>;
    let filter = |f: fn(&mut ListTicketsRequest)| {
        let mut req = ListTicketsRequest::default();
        f(&mut req);
        req
    };
    let cases: Vec<(ListTicketsRequest, Expected)> = vec![
        (
            filter(|r| r.channel = Channel::Pec as i32),
            Box::new(|t| t.channel() == Channel::Pec),
        ),
        (
            filter(|r| r.category = "rifiuti".into()),
            Box::new(|t| t.category == "rifiuti" || t.category.starts_with("rifiuti.")),
        ),
        (
            filter(|r| r.territory = "072006".into()),
            Box::new(move |t| istat(t) == "072006"),
        ),
        // Province 272 (Bari) holds Bari and 072004; region 13 (Abruzzo) holds Celano.
        (
            filter(|r| r.territory = "272".into()),
            Box::new(move |t| istat(t).starts_with("072")),
        ),
        (
            filter(|r| r.territory = "13".into()),
            Box::new(move |t| istat(t) == "066032"),
        ),
        // Text search ignores case and accents ("identita" finds "identità").
        (
            filter(|r| r.text = "LAMPIONI".into()),
            Box::new(|t| {
                t.subject.to_lowercase().contains("lampioni")
                    || t.description.to_lowercase().contains("lampioni")
            }),
        ),
        (
            filter(|r| r.text = "identita".into()),
            Box::new(|t| t.category == "anagrafe.carta_identita"),
        ),
    ];
    for (req, expected) in cases {
        let want = expect(&*expected);
        assert!(!want.is_empty(), "{req:?} selects something");
        assert_eq!(ids(&mut desk, req.clone()).await, want, "{req:?}");
    }
    // `made` holds states at creation; only made[0] moved on since.
    let in_progress = filter(|r| r.statuses = vec![Status::InProgress as i32]);
    assert_eq!(
        ids(&mut desk, in_progress).await,
        HashSet::from([made[0].id.clone()])
    );
    // updated_since: only the ticket changed after the creations.
    let since = made.last().unwrap().updated_at;
    let got = ids(
        &mut desk,
        ListTicketsRequest {
            updated_since: since,
            ..Default::default()
        },
    )
    .await;
    let mut changed =
        expect(&|t| millis(t.updated_at.as_ref().unwrap()) >= millis(since.as_ref().unwrap()));
    changed.insert(made[0].id.clone());
    assert_eq!(got, changed);
    node.stop().await;
}

async fn possible_duplicates_are_suggested(backend: Backend, test: &str) {
    let Some(node) = TestNode::start("c_a662", backend, test).await else {
        return;
    };
    let mut desk = node.desk().await;
    let located = |subject: &str, lat: f64, lon: f64, category: &str| CreateTicketRequest {
        category: category.into(),
        location: Some(Location {
            istat_code: "072006".into(),
            address: String::new(),
            coordinates: Some(Coordinates {
                latitude: lat,
                longitude: lon,
            }),
        }),
        ..request(subject)
    };
    let first = create(
        &mut desk,
        located("Buca in via Sparano", 41.1200, 16.8700, "strade.buche"),
    )
    .await;
    let suggested = |req: CreateTicketRequest| {
        let mut desk = desk.clone();
        async move {
            desk.create_ticket(req)
                .await
                .unwrap()
                .into_inner()
                .possible_duplicates
        }
    };
    let far = suggested(located("Buca a Japigia", 41.1000, 16.9000, "strade.buche")).await;
    assert!(far.is_empty(), "3 km away is not a duplicate");
    let other = suggested(located("Lampione", 41.1201, 16.8701, "illuminazione")).await;
    assert!(other.is_empty(), "another category is not a duplicate");
    let near = suggested(located("Buca profonda", 41.1202, 16.8701, "strade.buche")).await;
    assert_eq!(near.len(), 1);
    let candidate = &near[0];
    assert_eq!(candidate.ticket_id, first.id);
    assert!(candidate.distance_m.unwrap() < 50.0);

    // Same address, no coordinates: still suggested; closed tickets are not.
    let mut a = request("Lampioni spenti");
    a.location.as_mut().unwrap().address = "Via Sparano 1".into();
    let b = desk.create_ticket(a.clone()).await.unwrap().into_inner();
    a.request_id = format!("test-{}", ulid::Ulid::new());
    let c = desk.create_ticket(a.clone()).await.unwrap().into_inner();
    assert_eq!(
        c.possible_duplicates
            .iter()
            .map(|d| d.ticket_id.clone())
            .collect::<Vec<_>>(),
        vec![b.ticket.clone().unwrap().id]
    );
    let merged = desk
        .change_status(ChangeStatusRequest {
            ticket_id: c.ticket.unwrap().id,
            status: Status::Merged as i32,
            reason: String::new(),
            merged_into: b.ticket.clone().unwrap().id,
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(merged.status(), Status::Merged);
    assert_eq!(merged.merged_into, b.ticket.unwrap().id);
    a.request_id = format!("test-{}", ulid::Ulid::new());
    let d = desk.create_ticket(a).await.unwrap().into_inner();
    assert_eq!(
        d.possible_duplicates.len(),
        1,
        "the merged ticket is no longer offered"
    );
    node.stop().await;
}

async fn attachments_are_stored_once_by_sha256(backend: Backend, test: &str) {
    let Some(node) = TestNode::start("c_a662", backend, test).await else {
        return;
    };
    let mut desk = node.desk().await;
    let photo: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let with_photo = |subject: &str| CreateTicketRequest {
        attachments: vec![AttachmentUpload {
            file_name: "foto buca.jpg".into(),
            media_type: "image/jpeg".into(),
            content: photo.clone(),
        }],
        ..request(subject)
    };
    let a = create(&mut desk, with_photo("Prima segnalazione")).await;
    let b = create(&mut desk, with_photo("Seconda segnalazione")).await;
    let meta = &a.attachments[0];
    assert_eq!(meta.size_bytes, 50_000);
    assert_eq!(meta.sha256.len(), 64);
    assert_eq!(b.attachments[0].sha256, meta.sha256);
    let path = urpnet_node::attachments::blob_path(
        &urpnet_node::server::paths::attachments(&node.config.node.data_dir),
        &meta.sha256,
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        photo,
        "content lives once under its hash"
    );
    let got = desk
        .get_attachment(GetAttachmentRequest {
            sha256: meta.sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.content, photo);
    assert_eq!(got.attachment.unwrap().media_type, "image/jpeg");
    let err = desk
        .get_attachment(GetAttachmentRequest {
            sha256: "../../etc/passwd".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    node.stop().await;
}

async fn roles_limit_what_a_token_may_do(backend: Backend, test: &str) {
    let Some(node) = TestNode::start("c_a662", backend, test).await else {
        return;
    };
    let (store, writer) = urpnet_node::server::open_store(&node.config).await.unwrap();
    let now = urpnet_proto::hlc::system_time_ms() as i64;
    let (_, reader_token) = urpnet_node::auth::add_operator(
        &store,
        "cruscotto",
        urpnet_node::auth::Role::ReadOnly,
        now,
    )
    .await
    .unwrap();
    let (_, bot_token) = urpnet_node::auth::add_operator(
        &store,
        "chatbot",
        urpnet_node::auth::Role::Integration,
        now,
    )
    .await
    .unwrap();

    let mut admin = node.desk().await;
    let mut citizen_request = request("Con contatto");
    citizen_request.citizen = Some(urpnet_proto::v1::CitizenContact {
        full_name: "Maria Rossi".into(),
        email: "maria.rossi@example.it".into(),
        ..Default::default()
    });
    let ticket = create(&mut admin, citizen_request).await;

    let mut reader = node.desk_as(&reader_token).await;
    let err = reader
        .create_ticket(request("Non posso"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let seen = reader
        .get_ticket(GetTicketRequest {
            ticket_id: ticket.id.clone(),
            reference: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        seen.citizen.is_none(),
        "read-only callers never see citizens' contacts"
    );
    let seen = admin
        .get_ticket(GetTicketRequest {
            ticket_id: ticket.id.clone(),
            reference: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.citizen.unwrap().full_name, "Maria Rossi");

    let mut bot = node.desk_as(&bot_token).await;
    create(&mut bot, request("Dal chatbot")).await;
    // An integration never reads a citizen's contact back (API3).
    let seen = bot
        .get_ticket(GetTicketRequest {
            ticket_id: ticket.id.clone(),
            reference: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(seen.citizen.is_none(), "integrations never see contacts");
    bot.add_note(AddNoteRequest {
        ticket_id: ticket.id.clone(),
        public: true,
        text: "Risposta".into(),
    })
    .await
    .unwrap();
    let err = bot
        .add_note(AddNoteRequest {
            ticket_id: ticket.id.clone(),
            public: false,
            text: "Interna".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = status(&mut bot, &ticket.id, Status::InProgress, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let mut nobody = node.desk_as("urpnet_not-a-real-token").await;
    assert_eq!(
        nobody
            .list_tickets(ListTicketsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // Revocation takes effect within the cache time, also on a watch stream
    // the token holds open (docs/security.md, T4).
    let mut watch = bot
        .watch_tickets(urpnet_proto::v1::WatchTicketsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    urpnet_node::auth::tables::revoke(&store, "chatbot", now)
        .await
        .unwrap();
    urpnet_tests::wait_for(
        "revocation to take effect",
        std::time::Duration::from_secs(10),
        || {
            let mut bot = bot.clone();
            async move {
                (bot.list_tickets(ListTicketsRequest::default())
                    .await
                    .err()?
                    .code()
                    == Code::Unauthenticated)
                    .then_some(())
            }
        },
    )
    .await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch stream ends after the revocation");
    let err = ended.expect_err("it ends with an error");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    store.close().await;
    drop(store);
    writer.await.unwrap();
    node.stop().await;
}

async fn a_restarted_node_keeps_everything_and_continues_references(backend: Backend, test: &str) {
    let Some((dir, config)) = node_config("c_a662", backend, test).await else {
        return;
    };
    let node = TestNode::start_with(config.clone(), None).await;
    let mut desk = node.desk().await;
    let a = create(&mut desk, request("Prima del riavvio")).await;
    status(&mut desk, &a.id, Status::InProgress, "")
        .await
        .unwrap();
    let a = desk
        .get_ticket(GetTicketRequest {
            ticket_id: a.id.clone(),
            reference: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    node.stop().await;

    let node = TestNode::start_with(config, Some(dir)).await;
    let mut desk = node.desk().await;
    let again = desk
        .get_ticket(GetTicketRequest {
            ticket_id: a.id.clone(),
            reference: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(again, a);
    // Same category and address as `a`: the duplicates index was rebuilt.
    let created = desk
        .create_ticket(request("Dopo il riavvio"))
        .await
        .unwrap()
        .into_inner();
    let suggested: Vec<_> = created
        .possible_duplicates
        .iter()
        .map(|d| d.ticket_id.clone())
        .collect();
    assert_eq!(suggested, vec![a.id.clone()]);
    let b = created.ticket.unwrap();
    let seq = |t: &Ticket| {
        t.reference
            .rsplit('-')
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(seq(&b), seq(&a) + 1, "references continue after a restart");
    let later = status(&mut desk, &a.id, Status::Resolved, "")
        .await
        .unwrap();
    assert!(later.updated_at.unwrap().seconds >= a.updated_at.unwrap().seconds);
    let history = desk
        .get_history(GetHistoryRequest {
            ticket_id: a.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let stamps: Vec<_> = history
        .entries
        .iter()
        .map(|e| e.event.as_ref().unwrap().hlc.unwrap())
        .map(|h| (h.wall_ms, h.logical))
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "the clock resumes after the stored stamps"
    );
    node.stop().await;
}
