//! Small steps the chapters share: headings, the Desk calls an operator
//! makes all day, and waiting on the federation.

use std::time::Duration;

use anyhow::Context as _;
use urpnet_examples::federation;
use urpnet_node::cli;
use urpnet_proto::v1::{
    AddNoteRequest, AssignTicketRequest, ChangeStatusRequest, ListMembersRequest, Status, Ticket,
};

pub(crate) fn heading(text: &str) {
    use std::io::IsTerminal as _;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m== {text}\x1b[0m");
    } else {
        println!("\n== {text}");
    }
}

pub(crate) async fn change(
    desk: &mut cli::Desk,
    id: &str,
    to: Status,
    reason: &str,
) -> anyhow::Result<Ticket> {
    let req = ChangeStatusRequest {
        ticket_id: id.into(),
        status: to as i32,
        reason: reason.into(),
        merged_into: String::new(),
    };
    desk.change_status(req)
        .await?
        .into_inner()
        .ticket
        .context("ticket")
}

pub(crate) async fn assign(desk: &mut cli::Desk, id: &str, office: &str) -> anyhow::Result<Ticket> {
    let req = AssignTicketRequest {
        ticket_id: id.into(),
        office: office.into(),
    };
    desk.assign_ticket(req)
        .await?
        .into_inner()
        .ticket
        .context("ticket")
}

pub(crate) async fn note(
    desk: &mut cli::Desk,
    id: &str,
    public: bool,
    text: &str,
) -> anyhow::Result<()> {
    desk.add_note(AddNoteRequest {
        ticket_id: id.into(),
        public,
        text: text.into(),
    })
    .await?;
    Ok(())
}

/// The registry's member list as the coordinator sees it, or `None` if the
/// call failed (the caller polls again).
pub(crate) async fn members_of(
    registry: &federation::RunningRegistry,
) -> Option<Vec<urpnet_proto::v1::Member>> {
    Some(
        registry
            .admin()
            .ok()?
            .list_members(ListMembersRequest {})
            .await
            .ok()?
            .into_inner()
            .members,
    )
}

/// Prints the registry's member list (`urpnet-registry members list`).
pub(crate) async fn show_members(
    admin: &mut urpnet_proto::v1::registry_admin_client::RegistryAdminClient<
        tonic::transport::Channel,
    >,
) -> anyhow::Result<()> {
    let members = admin
        .list_members(ListMembersRequest {})
        .await?
        .into_inner()
        .members;
    println!("{}", urpnet_registry::cli::members_table(&members));
    Ok(())
}

/// Waits for a condition, polling, for at most 30 s.
pub(crate) async fn wait_until<T, F, Fut>(what: &str, mut condition: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = condition().await {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
