//! The signed, HLC-stamped history of the ticket closed in the lifecycle
//! chapter.

use urpnet_node::cli::output;
use urpnet_proto::v1::{GetHistoryRequest, Ticket};

use crate::Demo;
use crate::steps::heading;

pub(crate) async fn run(demo: &mut Demo, done: &Ticket) -> anyhow::Result<()> {
    let Demo { nodes, desk, .. } = demo;
    heading(&format!(
        "History of {} (every event signed by {}, HLC-stamped)",
        done.reference, nodes[0].id
    ));
    let history = desk
        .get_history(GetHistoryRequest {
            ticket_id: done.id.clone(),
        })
        .await?
        .into_inner();
    println!("{}", output::history_table(&history.entries));

    Ok(())
}
