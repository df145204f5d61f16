//! Tickets walked through their lifecycle at Celano: one closed after a
//! note and a resolution, one waiting for the citizen, one rejected.

use urpnet_proto::v1::{Status, Ticket};

use crate::Demo;
use crate::steps::{assign, change, heading, note};

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<Ticket> {
    let Demo {
        args,
        desk,
        tickets,
        ..
    } = demo;
    heading("Walking tickets through their lifecycle");
    let t = &tickets[0];
    assign(desk, &t.id, "ufficio-relazioni-pubblico").await?;
    change(desk, &t.id, Status::InProgress, "").await?;
    note(
        desk,
        &t.id,
        false,
        "Inoltrata all'ufficio competente, in attesa di riscontro",
    )
    .await?;
    note(
        desk,
        &t.id,
        true,
        "Gentile cittadino, la sua richiesta è in lavorazione",
    )
    .await?;
    change(desk, &t.id, Status::Resolved, "risposta inviata").await?;
    let done = change(desk, &t.id, Status::Closed, "").await?;
    println!(
        "{}  {} -> closed after assignment, two notes and a resolution",
        done.reference, t.subject
    );

    let w = &tickets[1];
    assign(desk, &w.id, "ufficio-tributi").await?;
    change(
        desk,
        &w.id,
        Status::WaitingCitizen,
        "serve copia del documento d'identità",
    )
    .await?;
    println!("{}  {} -> waiting for the citizen", w.reference, w.subject);

    let r = &tickets[2];
    change(
        desk,
        &r.id,
        Status::Rejected,
        "richiesta anonima e priva di elementi per procedere",
    )
    .await?;
    println!(
        "{}  {} -> rejected, with its reason on record",
        r.reference, r.subject
    );
    for t in tickets.iter().skip(3).take(args.tickets / 3) {
        assign(desk, &t.id, "ufficio-manutenzioni").await?;
    }
    println!("{} more assigned to ufficio-manutenzioni", args.tickets / 3);

    Ok(done)
}
