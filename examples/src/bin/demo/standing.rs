//! Where things stand: tickets by status, each stored state checked against
//! the fold of its signed events, and a metric.

use std::collections::BTreeMap;

use urpnet_node::shared_ticket::{fold, names};
use urpnet_proto::v1::{GetHistoryRequest, ListTicketsRequest};

use crate::Demo;
use crate::steps::heading;

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo { desk, .. } = demo;
    heading("Where things stand");
    let all = desk
        .list_tickets(ListTicketsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tickets;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for t in &all {
        *by_status.entry(names::status_name(t.status())).or_default() += 1;
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["status", "tickets"]);
    for (s, n) in &by_status {
        table.add_row([s.clone(), n.to_string()]);
    }
    println!("{table}");
    let mut consistent = 0;
    for t in &all {
        let h = desk
            .get_history(GetHistoryRequest {
                ticket_id: t.id.clone(),
            })
            .await?
            .into_inner();
        let refolded = fold::fold(h.entries.into_iter().filter_map(|e| e.event)).ticket;
        anyhow::ensure!(
            refolded.as_ref() == Some(t),
            "ticket {} differs from the fold of its events",
            t.reference
        );
        consistent += 1;
    }
    println!("{consistent} tickets: each stored state equals the fold of its signed events");
    let metrics = urpnet_proto::telemetry::prometheus().render();
    let created: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("urpnet_tickets_created_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!("metrics: urpnet_tickets_created_total = {created}");

    Ok(())
}
