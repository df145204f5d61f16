//! Notices to citizens through a real SMTP server (aiosmtpd on loopback) and
//! a real webhook receiver: what is sent, to whom, signed how; a refused
//! recipient does not hold the queue; an SMTP server down loses nothing and
//! sends nothing twice once it is back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use urpnet_examples::smtp::{SmtpSink, free_port};
use urpnet_proto::v1::{
    AddNoteRequest, ChangeStatusRequest, CitizenContact, Consent, CreateTicketRequest,
    GetHistoryRequest, Status, ticket_event::Kind,
};
use urpnet_tests::shared::request;
use urpnet_tests::{Backend, TestNode, wait_for};

/// A real SMTP server (aiosmtpd) on loopback.
async fn sink(port: u16, dir: &Path) -> SmtpSink {
    SmtpSink::start(port, dir)
        .await
        .expect("the SMTP sink (python3-aiosmtpd)")
}

/// A webhook receiver on loopback keeping what it got.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

async fn webhook_receiver() -> (SocketAddr, Received) {
    let got: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push((headers, body.to_vec()));
                    "ok"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, got)
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn node_with_notices(
    backend: Backend,
    test: &str,
    smtp_port: u16,
    webhook: Option<SocketAddr>,
) -> Option<TestNode> {
    let (dir, mut config) = urpnet_tests::node_config("c_c426", backend, test).await?;
    config.node.name = "Comune di Celano".into();
    config.notify.smtp_url = format!("smtp://127.0.0.1:{smtp_port}");
    config.notify.from = "URP Comune di Celano <urp@comune.celano.example.it>".into();
    config.notify.interval = Duration::from_millis(100);
    config.notify.max_backoff = Duration::from_millis(300);
    config.notify.timeout = Duration::from_secs(5);
    if let Some(addr) = webhook {
        let secret = dir.path().join("webhook.secret");
        std::fs::write(&secret, SECRET).unwrap();
        config.notify.webhook_url = format!("http://{addr}/hook");
        config.notify.webhook_secret_file = secret;
    }
    Some(TestNode::start_with(config, Some(dir)).await)
}

fn citizen_request(subject: &str, email: &str, updates: bool) -> CreateTicketRequest {
    let mut r = request("illuminazione", false);
    r.subject = subject.into();
    r.citizen = Some(CitizenContact {
        full_name: "Anna Di Censo".into(),
        email: email.into(),
        ..Default::default()
    });
    r.consent = Some(Consent {
        share_with_competent_body: false,
        contact_for_updates: updates,
    });
    r
}

async fn change(desk: &mut urpnet_node::cli::Desk, id: &str, to: Status, reason: &str) {
    desk.change_status(ChangeStatusRequest {
        ticket_id: id.into(),
        status: to as i32,
        reason: reason.into(),
        merged_into: String::new(),
    })
    .await
    .unwrap();
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(urpnet_tests::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(urpnet_tests::Backend::Postgres, concat!("postgres::", stringify!($name))).await;
            })*
        }
    };
}

both_backends!(citizens_who_asked_hear_of_status_changes_and_public_notes_by_email_and_webhook);

async fn citizens_who_asked_hear_of_status_changes_and_public_notes_by_email_and_webhook(
    backend: Backend,
    test: &str,
) {
    let mail_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = sink(port, mail_dir.path()).await;
    let (hook, received) = webhook_receiver().await;
    let Some(node) = node_with_notices(backend, test, port, Some(hook)).await else {
        sink.stop().await;
        return;
    };
    let mut desk = node.desk().await;
    let create = |r: CreateTicketRequest| {
        let mut d = desk.clone();
        async move { d.create_ticket(r).await.unwrap().into_inner() }
    };
    let anna = create(citizen_request(
        "Lampione spento in via Roma",
        "anna.dicenso@example.it",
        true,
    ))
    .await;
    let refused = create(citizen_request(
        "Buca in piazza",
        "rifiuta@example.it",
        true,
    ))
    .await;
    let silent = create(citizen_request(
        "Rami pericolanti",
        "muto@example.it",
        false,
    ))
    .await;
    let (anna_ticket, refused_ticket, silent_ticket) = (
        anna.ticket.unwrap(),
        refused.ticket.unwrap(),
        silent.ticket.unwrap(),
    );
    change(
        &mut desk,
        &anna_ticket.id,
        Status::InProgress,
        "affidata alla manutenzione",
    )
    .await;
    desk.add_note(AddNoteRequest {
        ticket_id: anna_ticket.id.clone(),
        public: true,
        text: "La squadra interverrà giovedì mattina".into(),
    })
    .await
    .unwrap();
    desk.add_note(AddNoteRequest {
        ticket_id: anna_ticket.id.clone(),
        public: false,
        text: "Nota interna: chiamare il fornitore".into(),
    })
    .await
    .unwrap();
    change(&mut desk, &refused_ticket.id, Status::InProgress, "").await;
    change(&mut desk, &silent_ticket.id, Status::InProgress, "").await;

    wait_for("two e-mails to Anna", Duration::from_secs(20), || {
        let count = sink.messages().len();
        async move { (count >= 2).then_some(()) }
    })
    .await;
    // Only once the queue is empty does "nothing more" mean something.
    wait_for("the queue to empty", Duration::from_secs(20), || {
        let node = &node;
        async move {
            let status = node.notify_status().await;
            let s = status?;
            (s.pending == 0).then_some(s)
        }
    })
    .await;
    let mails = sink.messages();
    assert_eq!(
        mails.len(),
        2,
        "a status change and a public note; no internal note, no refused or silent citizen"
    );
    let all = mails.join("\n");
    assert!(
        mails
            .iter()
            .all(|m| m.starts_with("X-Envelope-To: anna.dicenso@example.it")),
        "{all}"
    );
    assert!(
        all.contains(&format!("Segnalazione {}", anna_ticket.reference)),
        "{all}"
    );
    assert!(
        all.contains("La squadra interverr"),
        "the public note: {all}"
    );
    assert!(!all.contains("Nota interna"), "never an internal note");
    assert!(
        all.contains(&format!("/track/{}?key=", anna_ticket.reference)),
        "the tracking link: {all}"
    );
    assert!(all.contains(&anna.tracking_key), "the citizen's own key");
    assert!(
        all.contains("Message-ID: <") && all.contains("c_c426.urpnet.invalid>"),
        "{all}"
    );
    assert!(!all.contains("rifiuta@") && !all.contains("muto@"));

    // The webhook got the same two notices for Anna and one for the refused
    // e-mail's citizen (the body's gateway may reach them otherwise), each
    // signed as Standard Webhooks says; nothing for the silent one.
    let hooks = received.lock().unwrap().clone();
    assert_eq!(
        hooks.len(),
        3,
        "{:?}",
        hooks
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).to_string())
            .collect::<Vec<_>>()
    );
    let secret = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    for (headers, body) in &hooks {
        let id = headers["webhook-id"].to_str().unwrap();
        let ts: u64 = headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let expected = urpnet_node::notify::message::sign_webhook(&secret, id, ts, body);
        assert_eq!(headers["webhook-signature"].to_str().unwrap(), expected);
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], "ticket.updated");
        assert_ne!(v["data"]["reference"], silent_ticket.reference.as_str());
    }

    // The queue says what was given up.
    let status = node.notify_status().await.unwrap();
    assert_eq!(status.pending, 0);
    assert!(status.sent >= 3, "{status:?}");
    assert!(
        status.last_error.contains("550") || status.last_error.contains("refused"),
        "{status:?}"
    );

    // Each notice sent is on the ticket, without personal data.
    let history = desk
        .get_history(GetHistoryRequest {
            ticket_id: anna_ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let notices: Vec<_> = history
        .entries
        .iter()
        .filter_map(|e| match e.event.as_ref()?.kind.as_ref()? {
            Kind::CitizenNotified(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        notices.len(),
        4,
        "two changes, two channels each: {notices:?}"
    );
    assert!(
        notices
            .iter()
            .all(|n| !n.summary.contains('@') && !n.summary.contains("Anna"))
    );
    sink.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_down_loses_nothing_and_sends_nothing_twice() {
    let port = free_port();
    let Some(node) =
        node_with_notices(Backend::Sqlite, "sqlite::smtp_server_down", port, None).await
    else {
        return;
    };
    let mut desk = node.desk().await;
    let ticket = desk
        .create_ticket(citizen_request(
            "Cassonetto rotto",
            "anna.dicenso@example.it",
            true,
        ))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    change(&mut desk, &ticket.id, Status::InProgress, "").await;
    change(
        &mut desk,
        &ticket.id,
        Status::Resolved,
        "cassonetto sostituito",
    )
    .await;
    // Nobody listens: the node retries.
    wait_for("failed attempts", Duration::from_secs(20), || {
        let node = &node;
        async move {
            let m = node.metrics().await;
            (urpnet_tests::federation::counter(
                &m,
                "urpnet_notify_retried_total{channel=\"email\"}",
            ) >= 2.0)
                .then_some(())
        }
    })
    .await;
    let mail_dir = tempfile::tempdir().unwrap();
    let sink = sink(port, mail_dir.path()).await;
    let mails = wait_for(
        "both e-mails once the server is back",
        Duration::from_secs(20),
        || {
            let mails = sink.messages();
            async move { (mails.len() >= 2).then_some(mails) }
        },
    )
    .await;
    wait_for("the queue to empty", Duration::from_secs(20), || {
        let node = &node;
        async move {
            let status = node.notify_status().await;
            (status?.pending == 0).then_some(())
        }
    })
    .await;
    assert_eq!(sink.messages().len(), 2, "exactly once each: {mails:?}");
    let ids: std::collections::BTreeSet<String> = sink
        .messages()
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Message-ID:"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(ids.len(), 2, "one message id per change");
    sink.stop().await;
    node.stop().await;
}

/// An App IO stand-in on loopback: `POST /profiles` allows one fiscal code,
/// `POST /messages` keeps what it got, with the key header.
async fn app_io_receiver(allowed: &'static str) -> (SocketAddr, Received) {
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/v1/profiles",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| async move {
                axum::Json(serde_json::json!({
                    "sender_allowed": body["fiscal_code"] == allowed,
                }))
            }),
        )
        .route(
            "/api/v1/messages",
            axum::routing::post({
                let got = got.clone();
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let got = got.clone();
                    async move {
                        got.lock().unwrap().push((headers, body.to_vec()));
                        (
                            axum::http::StatusCode::CREATED,
                            axum::Json(serde_json::json!({"id": "01EM6X4JB9VSZTQ8H16KMQFCEJ"})),
                        )
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_io_messages_reach_only_citizens_who_allow_them() {
    const ALLOWED: &str = "DCNNNA80A41C426X";
    let (io, received) = app_io_receiver(ALLOWED).await;
    let Some((dir, mut config)) =
        urpnet_tests::node_config("c_c426", Backend::Sqlite, "sqlite::app_io").await
    else {
        return;
    };
    let key_file = dir.path().join("appio.key");
    std::fs::write(&key_file, "io-service-key-0123456789\n").unwrap();
    config.notify.appio_url = format!("http://{io}/api/v1");
    config.notify.appio_key_file = key_file;
    config.notify.interval = Duration::from_millis(100);
    let node = TestNode::start_with(config, Some(dir)).await;
    let mut desk = node.desk().await;
    for fiscal_code in [ALLOWED, "RSSMRA80A01H501U"] {
        let mut r = citizen_request("Lampione spento", "", true);
        r.citizen.as_mut().unwrap().fiscal_code = fiscal_code.into();
        let t = desk
            .create_ticket(r)
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        change(&mut desk, &t.id, Status::InProgress, "").await;
    }
    wait_for("both notices done", Duration::from_secs(20), || {
        let node = &node;
        async move {
            let status = node.notify_status().await;
            let s = status?;
            (s.pending == 0 && s.sent == 1).then_some(())
        }
    })
    .await;
    let messages = received.lock().unwrap().clone();
    assert_eq!(
        messages.len(),
        1,
        "only the citizen who allows this body's messages"
    );
    let (headers, body) = &messages[0];
    assert_eq!(
        headers["ocp-apim-subscription-key"],
        "io-service-key-0123456789"
    );
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["fiscal_code"], ALLOWED);
    let subject = v["content"]["subject"].as_str().unwrap();
    let markdown = v["content"]["markdown"].as_str().unwrap();
    assert!((10..=120).contains(&subject.chars().count()), "{subject}");
    assert!(
        (80..=10_000).contains(&markdown.chars().count()),
        "{markdown}"
    );
    assert!(subject.contains("In lavorazione"), "{subject}");
    node.stop().await;
}
