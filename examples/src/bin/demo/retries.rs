//! A retried create (same request id) answers the first ticket, never a second.

use urpnet_examples::samples;
use urpnet_proto::v1::Channel;

use crate::Demo;
use crate::steps::heading;

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo { desk, rng, .. } = demo;
    heading("A flaky mobile network retries a request");
    let retry = samples::request(rng, "066032", Channel::App);
    let a = desk.create_ticket(retry.clone()).await?.into_inner();
    let b = desk.create_ticket(retry).await?.into_inner();
    println!(
        "same request_id twice -> {} both times (second answer replayed: {})",
        b.ticket
            .as_ref()
            .map(|t| t.reference.as_str())
            .unwrap_or("?"),
        b.replayed
    );
    anyhow::ensure!(
        a.ticket == b.ticket,
        "a retried create must return the same ticket"
    );

    Ok(())
}
