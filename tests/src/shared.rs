//! Helpers for tests of shared tickets: a citizen's request, and reading a
//! ticket, its history and its state at a node until a condition holds.

use std::time::Duration;

use urpnet_node::cli::Desk;
use urpnet_proto::v1::{
    ChangeStatusRequest, Channel, CitizenContact, Consent, CreateTicketRequest, GetHistoryRequest,
    GetTicketRequest, Location, Status, Ticket,
};

use crate::wait_for;

/// How long a test waits for anything to travel between nodes.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A citizen's phone request at Celano, with contact data and the given
/// consent to share it with the competent body.
pub fn request(category: &str, consent: bool) -> CreateTicketRequest {
    CreateTicketRequest {
        request_id: format!("test-{}", ulid::Ulid::new()),
        category: category.into(),
        channel: Channel::Phone as i32,
        subject: "Prenotazione visita cardiologica".into(),
        description: "Chiede come prenotare una visita al presidio di Avezzano".into(),
        location: Some(Location {
            istat_code: "066032".into(),
            address: "Via Roma 1".into(),
            coordinates: None,
        }),
        citizen: Some(CitizenContact {
            full_name: "Maria Rossi".into(),
            email: "maria.rossi@example.it".into(),
            phone: "+39 0863 000000".into(),
            fiscal_code: String::new(),
        }),
        consent: Some(Consent {
            share_with_competent_body: consent,
            contact_for_updates: true,
        }),
        ..Default::default()
    }
}

/// Creates a ticket.
pub async fn create(desk: &mut Desk, req: CreateTicketRequest) -> Ticket {
    desk.create_ticket(req)
        .await
        .expect("create")
        .into_inner()
        .ticket
        .expect("ticket")
}

/// The ticket as the node behind `desk` holds it, if it does.
pub async fn get(desk: &Desk, id: &str) -> Option<Ticket> {
    desk.clone()
        .get_ticket(GetTicketRequest {
            ticket_id: id.into(),
            reference: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .ticket
}

/// Waits until the node behind `desk` holds ticket `id` in a state that
/// satisfies `ok`.
pub async fn wait_ticket(
    what: &str,
    desk: &Desk,
    id: &str,
    ok: impl Fn(&Ticket) -> bool,
) -> Ticket {
    wait_for(what, DEADLINE, || async {
        get(desk, id).await.filter(|t| ok(t))
    })
    .await
}

/// (event id, effective) in fold order.
pub async fn history(desk: &Desk, id: &str) -> Vec<(String, bool)> {
    desk.clone()
        .get_history(GetHistoryRequest {
            ticket_id: id.into(),
        })
        .await
        .expect("history")
        .into_inner()
        .entries
        .into_iter()
        .map(|e| (e.event.expect("event").event_id, e.effective))
        .collect()
}

/// Changes the status.
pub async fn status(desk: &mut Desk, id: &str, to: Status) -> Result<Ticket, tonic::Status> {
    desk.change_status(ChangeStatusRequest {
        ticket_id: id.into(),
        status: to as i32,
        reason: "lavorata".into(),
        merged_into: String::new(),
    })
    .await
    .map(|r| r.into_inner().ticket.expect("ticket"))
}

/// Creates a ticket at `origin`, offers it to `target` (node id) and has
/// `target_desk` accept it; returns once the origin sees the new owner.
pub async fn handed_over(
    origin: &mut Desk,
    target_desk: &mut Desk,
    target: &str,
    category: &str,
) -> Ticket {
    let ticket = create(origin, request(category, false)).await;
    origin
        .handoff(urpnet_proto::v1::HandoffRequest {
            ticket_id: ticket.id.clone(),
            to_node: target.into(),
            reason: "per competenza".into(),
            overflow: false,
        })
        .await
        .expect("handoff");
    wait_ticket("the offer at the target", target_desk, &ticket.id, |t| {
        t.pending_handoff.is_some()
    })
    .await;
    accept(target_desk, &ticket.id).await;
    wait_ticket("the new owner at the origin", origin, &ticket.id, |t| {
        t.owner_node == target
    })
    .await
}

/// Adds a note.
pub async fn note(desk: &mut Desk, id: &str, text: &str) {
    desk.add_note(urpnet_proto::v1::AddNoteRequest {
        ticket_id: id.into(),
        public: false,
        text: text.into(),
    })
    .await
    .expect("note");
}

/// Waits until both desks hold ticket `id` with the same events, and
/// returns its history.
pub async fn converged(a: &Desk, b: &Desk, id: &str, deadline: Duration) -> Vec<(String, bool)> {
    wait_for(
        "the two nodes to hold the same events",
        deadline,
        || async {
            let (ha, hb) = (try_history(a, id).await?, try_history(b, id).await?);
            (ha == hb).then_some(ha)
        },
    )
    .await
}

/// The history of `id` at `desk`, `None` while it is not there.
pub async fn try_history(desk: &Desk, id: &str) -> Option<Vec<(String, bool)>> {
    Some(
        desk.clone()
            .get_history(GetHistoryRequest {
                ticket_id: id.into(),
            })
            .await
            .ok()?
            .into_inner()
            .entries
            .into_iter()
            .map(|e| (e.event.map(|e| e.event_id).unwrap_or_default(), e.effective))
            .collect(),
    )
}

/// The node's delivery to each peer.
pub async fn peers(desk: &Desk) -> Option<Vec<urpnet_proto::v1::PeerDelivery>> {
    Some(
        desk.clone()
            .list_peers(urpnet_proto::v1::ListPeersRequest {})
            .await
            .ok()?
            .into_inner()
            .peers,
    )
}

/// Waits until nothing waits in the node's outbox for any peer (and, with
/// `reachable`, the last delivery to each succeeded); returns the peers.
pub async fn outbox_drained(
    desk: &Desk,
    reachable: bool,
    deadline: Duration,
) -> Vec<urpnet_proto::v1::PeerDelivery> {
    wait_for("the outbox to drain", deadline, || async {
        let peers = peers(desk).await?;
        peers
            .iter()
            .all(|p| p.outbox_depth == 0 && (!reachable || p.reachable == Some(true)))
            .then_some(peers)
    })
    .await
}

/// Accepts the offer pending for the node behind `desk`; returns the ticket.
pub async fn accept(desk: &mut Desk, id: &str) -> Ticket {
    desk.accept_handoff(urpnet_proto::v1::AnswerHandoffRequest {
        ticket_id: id.into(),
        reason: String::new(),
    })
    .await
    .expect("accept")
    .into_inner()
    .ticket
    .expect("ticket")
}

/// The citizen's contact as the node behind `desk` holds it for ticket `id`.
pub async fn contact(desk: &Desk, id: &str) -> Option<CitizenContact> {
    desk.clone()
        .get_ticket(GetTicketRequest {
            ticket_id: id.into(),
            reference: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .citizen
}

/// A CharterDesk client with an operator's token.
pub type Charter = urpnet_proto::v1::charter_desk_client::CharterDeskClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        urpnet_node::cli::TokenInterceptor,
    >,
>;

/// An AppointmentDesk client with an operator's token.
pub type Appointments = urpnet_proto::v1::appointment_desk_client::AppointmentDeskClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        urpnet_node::cli::TokenInterceptor,
    >,
>;

/// The sample booking plans: "celano" or "regione-abruzzo".
pub fn sample_plans(name: &str) -> Vec<urpnet_proto::v1::AppointmentPlan> {
    let text = match name {
        "celano" => include_str!("../../examples/appointments/celano.toml"),
        "regione-abruzzo" => include_str!("../../examples/appointments/regione-abruzzo.toml"),
        other => panic!("no sample plans {other}"),
    };
    urpnet_node::appointments::plan::from_toml(text).expect("sample plans")
}

/// A sample charter: "celano" or "regione-abruzzo".
pub fn sample_charter(name: &str) -> urpnet_proto::v1::Charter {
    let text = match name {
        "celano" => include_str!("../../examples/charters/celano.toml"),
        "regione-abruzzo" => include_str!("../../examples/charters/regione-abruzzo.toml"),
        other => panic!("no sample charter {other}"),
    };
    urpnet_node::charter::import::from_toml(name, text, "", None).expect("sample charter")
}

/// A FaqDesk client with an operator's token.
pub type Faq = urpnet_proto::v1::faq_desk_client::FaqDeskClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        urpnet_node::cli::TokenInterceptor,
    >,
>;

/// The sample FAQs of `scope` ("comune", "regione").
pub fn sample_faqs(scope: &str) -> Vec<urpnet_proto::v1::FaqContent> {
    urpnet_node::faq::sample::parse(urpnet_node::faq::sample::SAMPLE)
        .expect("the sample collection parses")
        .into_iter()
        .filter(|e| e.scope == scope)
        .map(|e| e.content)
        .collect()
}

/// Publishes an entry; its key.
pub async fn publish(faq: &mut Faq, content: urpnet_proto::v1::FaqContent) -> String {
    faq.publish_faq(urpnet_proto::v1::PublishFaqRequest {
        content: Some(content),
        ..Default::default()
    })
    .await
    .expect("publish")
    .into_inner()
    .entry
    .expect("entry")
    .key
}

/// A search with default filters.
pub async fn search(
    faq: &Faq,
    query: &str,
) -> Result<urpnet_proto::v1::SearchFaqResponse, tonic::Status> {
    faq.clone()
        .search_faq(urpnet_proto::v1::SearchFaqRequest {
            query: query.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Waits until a search for `query` at a node finds `key` at `version`;
/// the hit.
pub async fn wait_found(
    faq: &Faq,
    query: &str,
    key: &str,
    version: u64,
) -> urpnet_proto::v1::FaqHit {
    wait_for(
        &format!("{key} v{version} found by {query:?}"),
        DEADLINE,
        || {
            let faq = faq.clone();
            async move {
                search(&faq, query)
                    .await
                    .ok()?
                    .hits
                    .into_iter()
                    .find(|h| h.key == key && h.version == version)
            }
        },
    )
    .await
}

/// The node's FAQ status.
pub async fn faq_status(faq: &Faq) -> Option<urpnet_proto::v1::FaqStatusResponse> {
    faq.clone()
        .faq_status(urpnet_proto::v1::FaqStatusRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

/// A mutual-TLS channel to node `to` at `endpoint`, presenting `material`
/// (a member's certificate), as another node would open it.
pub fn channel_as(
    material: &urpnet_proto::tls::TlsMaterial,
    endpoint: &str,
    to: &str,
) -> tonic::transport::Channel {
    urpnet_proto::tls::channel_to(
        endpoint,
        material.client_config().expect("client config"),
        Duration::from_secs(3),
        urpnet_proto::tls::Identity::Node(urpnet_proto::ids::NodeId::new(to).expect("id")),
    )
    .expect("channel")
}

/// A member's `FaqExchange` client to the node `to` at `endpoint`, with
/// its real certificate (for tests that play a hostile member).
pub fn exchange(
    material: &urpnet_proto::tls::TlsMaterial,
    endpoint: &str,
    to: &str,
) -> urpnet_proto::v1::faq_exchange_client::FaqExchangeClient<tonic::transport::Channel> {
    urpnet_proto::v1::faq_exchange_client::FaqExchangeClient::new(channel_as(
        material, endpoint, to,
    ))
    .max_encoding_message_size(64 * 1024 * 1024)
    .max_decoding_message_size(64 * 1024 * 1024)
}

/// Waits until the offer of ticket `id` is in `desk`'s inbox; the offer.
pub async fn wait_offer(desk: &Desk, id: &str) -> urpnet_proto::v1::Offer {
    wait_for(&format!("the offer of {id} in the inbox"), DEADLINE, || {
        let mut desk = desk.clone();
        async move {
            desk.list_offers(urpnet_proto::v1::ListOffersRequest::default())
                .await
                .ok()?
                .into_inner()
                .incoming
                .into_iter()
                .find(|o| o.ticket.as_ref().is_some_and(|t| t.id == id))
        }
    })
    .await
}

/// Waits until the member list cached in `data_dir` shows every one of
/// `ids` active (a node as a child process is known to its peers then).
pub async fn wait_cached_members(data_dir: &std::path::Path, ids: &[&str]) {
    wait_for("every member known", Duration::from_secs(30), || async {
        let m = urpnet_node::registry_link::load_cache(data_dir).0?;
        ids.iter().all(|id| m.is_active(id)).then_some(())
    })
    .await;
}
