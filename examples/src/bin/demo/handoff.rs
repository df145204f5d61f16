//! A request for another body: routed by the registry, offered, accepted,
//! answered there, and the same ticket folded at both offices.

use anyhow::Context as _;
use urpnet_node::cli::{self, output};
use urpnet_proto::v1::{
    AnswerHandoffRequest, Channel, CitizenContact, Consent, CreateTicketRequest, GetHistoryRequest,
    GetTicketRequest, HandoffRequest, ListOffersRequest, ListPeersRequest, Location, Status,
};

use crate::Demo;
use crate::steps::{assign, change, heading, note, wait_until};

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo { nodes, desk, .. } = demo;
    heading("A citizen calls Celano about a regional matter");
    let region = &nodes[1];
    let mut region_desk = cli::connect(
        &region.desk_addr.to_string(),
        &region.token,
        region.config.desk.max_message_bytes,
    )
    .await?;
    let call = desk
        .create_ticket(CreateTicketRequest {
            request_id: format!("demo-{}", ulid::Ulid::new()),
            category: "sanita.prenotazioni".into(),
            channel: Channel::Phone as i32,
            subject: "Prenotare una visita cardiologica".into(),
            description: "La signora chiede come prenotare una visita cardiologica \
                          all'ospedale di Avezzano e quanto si attende"
                .into(),
            location: Some(Location {
                istat_code: "066032".into(),
                address: "Via Roma 10".into(),
                coordinates: None,
            }),
            citizen: Some(CitizenContact {
                full_name: "Anna Di Censo".into(),
                email: String::new(),
                phone: "+39 0863 123456".into(),
                fiscal_code: String::new(),
            }),
            consent: Some(Consent {
                share_with_competent_body: true,
                contact_for_updates: true,
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ticket
        .context("ticket")?;
    let offered = desk
        .handoff(HandoffRequest {
            ticket_id: call.id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "{} opened at c_c426 by phone; handoff without a target, so the registry routes it:\n  -> {} ({})",
        call.reference, offered.to_node, offered.decided_by
    );
    let inbox = wait_until("the offer in the region's inbox", || async {
        let offers = region_desk
            .clone()
            .list_offers(ListOffersRequest::default())
            .await
            .ok()?
            .into_inner();
        (!offers.incoming.is_empty()).then_some(offers.incoming)
    })
    .await?;
    println!("The region's inbox (urpnet-node ticket offers):");
    println!("{}", output::offers_table(&inbox));
    region_desk
        .accept_handoff(AnswerHandoffRequest {
            ticket_id: call.id.clone(),
            reason: String::new(),
        })
        .await?;
    assign(&mut region_desk, &call.id, "cup-regionale").await?;
    change(&mut region_desk, &call.id, Status::InProgress, "").await?;
    note(
        &mut region_desk,
        &call.id,
        true,
        "Prenotabile al CUP regionale (numero verde) o in farmacia; attesa attuale 20 giorni",
    )
    .await?;
    change(
        &mut region_desk,
        &call.id,
        Status::Resolved,
        "informazioni date",
    )
    .await?;
    let at_region = region_desk
        .get_ticket(GetTicketRequest {
            ticket_id: call.id.clone(),
            reference: String::new(),
        })
        .await?
        .into_inner();
    println!(
        "r_abruzz accepted, assigned it to cup-regionale, answered and resolved it; \
         the citizen's contact came with it (consent given): {}",
        at_region
            .citizen
            .as_ref()
            .map_or("no".to_string(), |c| format!("yes, {}", c.full_name))
    );
    let at_celano = wait_until("the resolution to reach Celano", || async {
        let t = desk
            .clone()
            .get_ticket(GetTicketRequest {
                ticket_id: call.id.clone(),
                reference: String::new(),
            })
            .await
            .ok()?
            .into_inner()
            .ticket?;
        (t.status() == Status::Resolved && t.note_count == 1).then_some(t)
    })
    .await?;
    anyhow::ensure!(
        Some(&at_celano) == at_region.ticket.as_ref(),
        "both offices must fold the same ticket"
    );
    for (who, d) in [
        ("c_c426 (origin)", &*desk),
        ("r_abruzz (owner)", &region_desk),
    ] {
        let h = d
            .clone()
            .get_history(GetHistoryRequest {
                ticket_id: call.id.clone(),
            })
            .await?
            .into_inner();
        println!("History of {} as {who} holds it:", call.reference);
        println!("{}", output::history_table(&h.entries));
    }
    let peers = desk.list_peers(ListPeersRequest {}).await?.into_inner();
    println!("Delivery from Celano (urpnet-node peers):");
    println!("{}", output::peers_table(&peers.peers));

    Ok(())
}
