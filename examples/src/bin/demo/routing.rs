//! The registry routes each kind of request to its competent body, and says why.

use urpnet_examples::samples;
use urpnet_proto::v1::RouteRequest;

use crate::Demo;
use crate::steps::heading;

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo {
        registry, nodes, ..
    } = demo;
    heading("Competence routing: who answers for what, and why");
    let celano = &nodes[0];
    let mut as_celano = registry.registry_as(&celano.tls)?;
    let mut routes = comfy_table::Table::new();
    routes.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    routes.set_header(["request about", "in", "goes to", "why"]);
    for (category, comune) in [
        ("rifiuti.ingombranti", "066032"),
        ("rifiuti.ingombranti", "066006"),
        ("sanita.prenotazioni", "066032"),
        ("strade.provinciali", "066032"),
        ("pensioni", "066032"),
        ("anagrafe.certificati", "066049"),
    ] {
        let r = as_celano
            .route(RouteRequest {
                category: category.into(),
                territory: comune.into(),
            })
            .await?
            .into_inner();
        let member = r.member.unwrap_or_default();
        routes.add_row([
            category.to_string(),
            samples::comune(comune).name.clone(),
            format!(
                "{}{}",
                member.id,
                if r.fallback { " (fallback)" } else { "" }
            ),
            r.reason,
        ]);
    }
    println!("{routes}");

    Ok(())
}
