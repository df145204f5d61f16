//! Two citizens report the same pothole: the second gets the first suggested
//! and is merged into it.

use anyhow::Context as _;
use urpnet_node::cli::output;
use urpnet_node::shared_ticket::names;
use urpnet_proto::v1::{
    ChangeStatusRequest, Channel, Coordinates, CreateTicketRequest, Location, Status,
};

use crate::Demo;
use crate::steps::heading;

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo { desk, .. } = demo;
    heading("Two citizens report the same pothole");
    let pothole = |subject: &str, lat: f64, lon: f64, channel: Channel| CreateTicketRequest {
        request_id: format!("demo-{}", ulid::Ulid::new()),
        category: "strade.buche".into(),
        channel: channel as i32,
        subject: subject.into(),
        description: "Buca profonda davanti al civico 52, pericolosa per i motorini".into(),
        location: Some(Location {
            istat_code: "066032".into(),
            address: "Via Roma 52".into(),
            coordinates: Some(Coordinates {
                latitude: lat,
                longitude: lon,
            }),
        }),
        ..Default::default()
    };
    let first = desk
        .create_ticket(pothole(
            "Buca in via Roma",
            42.08470,
            13.55690,
            Channel::App,
        ))
        .await?
        .into_inner();
    let second = desk
        .create_ticket(pothole(
            "Voragine via Roma",
            42.08478,
            13.55700,
            Channel::Phone,
        ))
        .await?
        .into_inner();
    let (first, second_ticket) = (
        first.ticket.context("ticket")?,
        second.ticket.clone().context("ticket")?,
    );
    println!(
        "{} filed by app; {} filed by phone, with this suggestion:",
        first.reference, second_ticket.reference
    );
    println!("{}", output::duplicates_table(&second.possible_duplicates));
    let merged = desk
        .change_status(ChangeStatusRequest {
            ticket_id: second_ticket.id.clone(),
            status: Status::Merged as i32,
            reason: String::new(),
            merged_into: first.id.clone(),
        })
        .await?
        .into_inner()
        .ticket
        .context("ticket")?;
    println!(
        "{} merged into {} ({})",
        merged.reference,
        first.reference,
        names::status_name(merged.status())
    );

    Ok(())
}
