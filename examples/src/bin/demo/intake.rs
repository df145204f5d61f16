//! A day at Celano's desk: requests from every channel, about Celano and the
//! rest of its province, with duplicates suggested as they come.

use std::collections::BTreeMap;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom as _;
use urpnet_examples::samples;
use urpnet_node::cli::output;
use urpnet_node::shared_ticket::names;
use urpnet_proto::territory::Territory;

use crate::Demo;
use crate::steps::heading;

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo {
        args,
        nodes,
        desk,
        rng,
        tickets,
        ..
    } = demo;
    let node = &nodes[0];
    println!(
        "\nCelano's node: data {} (SQLite, WAL, synchronous=FULL); desk {} with health + reflection",
        node.config.node.data_dir.display(),
        node.desk_addr
    );
    heading(&format!(
        "Citizens write, call and walk in: {} requests",
        args.tickets
    ));
    let italy = Territory::italy();
    let province: Vec<&str> = italy
        .comuni()
        .filter(|c| c.province_code == "066")
        .map(|c| c.istat_code.as_str())
        .collect();
    println!(
        "about the provincia dell'Aquila: {} comuni, e.g. {}",
        province.len(),
        province
            .iter()
            .take(4)
            .map(|c| italy.comune(c).map(|c| c.name.as_str()).unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bar = ProgressBar::new(args.tickets as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tickets filed",
    )?);
    let mut suggested = 0;
    for i in 0..args.tickets {
        // Most requests are about Celano itself, some about the rest of the province.
        let comune = if i % 3 == 0 {
            *province.choose(rng).expect("comuni")
        } else {
            "066032"
        };
        let channel = samples::CHANNELS[i % samples::CHANNELS.len()];
        let created = desk
            .create_ticket(samples::request(rng, comune, channel))
            .await?
            .into_inner();
        suggested += usize::from(!created.possible_duplicates.is_empty());
        tickets.push(created.ticket.context("ticket")?);
        bar.inc(1);
    }
    bar.finish();
    let mut by_channel: BTreeMap<String, usize> = BTreeMap::new();
    for t in tickets.iter() {
        *by_channel
            .entry(names::channel_name(t.channel()))
            .or_default() += 1;
    }
    println!(
        "by channel: {}",
        by_channel
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{suggested} of them came with possible duplicates suggested (same category, nearby, recent)"
    );
    println!(
        "{}",
        output::tickets_table(&tickets[..8.min(tickets.len())])
    );

    Ok(())
}
