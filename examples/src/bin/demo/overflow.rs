//! Celano's queue grows; the registry says where its overflow may go.

use urpnet_proto::v1::OverflowRequest;
use urpnet_registry::cli as registry_cli;

use crate::Demo;
use crate::steps::{heading, members_of, show_members, wait_until};

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo {
        registry,
        admin,
        nodes,
        ..
    } = demo;
    heading("Celano is swamped: where can its overflow go?");
    wait_until("Celano's next heartbeat to report its queue", || async {
        let members = members_of(registry).await?;
        let celano = members.iter().find(|m| m.id == "c_c426")?;
        (celano.load.as_ref()?.queue_waiting > 20).then_some(())
    })
    .await?;
    show_members(admin).await?;
    let mut as_celano = registry.registry_as(&nodes[0].tls)?;
    let overflow = as_celano
        .overflow(OverflowRequest {
            category: "informazioni".into(),
            from: String::new(),
            limit: 5,
        })
        .await?
        .into_inner();
    println!("Overflow(informazioni) asked by c_c426 with its own certificate:");
    println!("{}", registry_cli::overflow_text(&overflow));

    Ok(())
}
