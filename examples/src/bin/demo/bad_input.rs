//! Bad input is refused, naming the field and the rule.

use anyhow::Context as _;
use urpnet_examples::samples;
use urpnet_proto::v1::{ChangeStatusRequest, Channel, Coordinates, Status, Ticket};

use crate::Demo;
use crate::steps::heading;

pub(crate) async fn run(demo: &mut Demo, done: &Ticket) -> anyhow::Result<()> {
    let Demo { desk, rng, .. } = demo;
    heading("Bad input is refused, naming the field and the rule");
    let mut bad = samples::request(rng, "066032", Channel::Web);
    bad.category = "astrologia".into();
    bad.location.as_mut().context("location")?.coordinates = Some(Coordinates {
        latitude: 123.0,
        longitude: 16.0,
    });
    match desk.create_ticket(bad).await {
        Ok(_) => anyhow::bail!("a bad request was accepted"),
        Err(status) => println!("{:?}: {}", status.code(), status.message()),
    }
    let reopen = ChangeStatusRequest {
        ticket_id: done.id.clone(),
        status: Status::InProgress as i32,
        reason: String::new(),
        merged_into: String::new(),
    };
    match desk.change_status(reopen).await {
        Ok(_) => anyhow::bail!("a closed ticket was reopened"),
        Err(status) => println!("{:?}: {}", status.code(), status.message()),
    }

    Ok(())
}
