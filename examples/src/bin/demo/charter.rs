//! The charter of services: the Region and Celano publish theirs; at
//! Celano an operator answers "dove rinnovo la tessera sanitaria e cosa
//! devo portare?" with the Region's office, hours, open-now and documents;
//! Celano prints the door sign of its registry office.

use urpnet_node::cli;
use urpnet_proto::v1::charter_desk_client::CharterDeskClient;
use urpnet_proto::v1::faq_desk_client::FaqDeskClient;
use urpnet_proto::v1::{
    ExplainRequest, GetCharterRequest, ImportCharterRequest, ListChartersRequest, SuggestFaqRequest,
};

use crate::Demo;
use crate::join::RunningNode;
use crate::steps::{heading, wait_until};

const REGIONE: &str = include_str!("../../../charters/regione-abruzzo.toml");
const CELANO: &str = include_str!("../../../charters/celano.toml");

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo { nodes, dir, .. } = demo;
    heading("The charter of services: offices, hours, documents, shared with the region");
    let client = |node: &RunningNode| {
        let (addr, token) = (node.desk_addr.to_string(), node.token.clone());
        async move {
            let (channel, token) = cli::channel_with_token(&addr, &token).await?;
            anyhow::Ok(CharterDeskClient::with_interceptor(channel, token))
        }
    };
    let mut celano = client(&nodes[0]).await?;
    let mut region = client(&nodes[1]).await?;
    for (node, name, text, client) in [
        ("r_abruzz", "regione-abruzzo.toml", REGIONE, &mut region),
        ("c_c426", "celano.toml", CELANO, &mut celano),
    ] {
        let charter = urpnet_node::charter::import::from_toml(name, text, "", None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = client
            .import_charter(ImportCharterRequest {
                charter: Some(charter),
            })
            .await?
            .into_inner();
        println!(
            "{node} published its charter (examples/charters/{name}): version {}, {} offices, {} services, signed",
            s.version, s.offices, s.services
        );
    }
    let started = std::time::Instant::now();
    wait_until("the Region's charter to reach Celano", || {
        let mut c = celano.clone();
        async move {
            let l = c
                .list_charters(ListChartersRequest {})
                .await
                .ok()?
                .into_inner();
            l.charters
                .iter()
                .any(|s| s.body == "r_abruzz")
                .then_some(())
        }
    })
    .await?;
    println!(
        "c_c426   holds the Region's charter after {:.1} s (the same exchange as the FAQ set)",
        started.elapsed().as_secs_f64()
    );

    let question = "dove rinnovo la tessera sanitaria e cosa devo portare?";
    println!("\nA citizen calls Celano: \"{question}\"");
    let (channel, token) =
        cli::channel_with_token(&nodes[0].desk_addr.to_string(), &nodes[0].token).await?;
    let suggested = FaqDeskClient::with_interceptor(channel, token)
        .suggest_faq(SuggestFaqRequest {
            text: question.into(),
            limit: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    for h in &suggested.services {
        println!("  charter: {} — {} ({})", h.body_name, h.title, h.service);
    }
    let first = suggested
        .services
        .first()
        .ok_or_else(|| anyhow::anyhow!("no service answers the question"))?;
    let answer = celano
        .explain(ExplainRequest {
            body: first.body.clone(),
            service: first.service.clone(),
            at_ms: 0,
        })
        .await?
        .into_inner();
    println!(
        "\nThe operator's screen (urpnet-node charter explain {} {}):\n",
        first.body, first.service
    );
    for line in cli::charter::explain_text(&answer).lines() {
        println!("  {line}");
    }

    let own = celano
        .get_charter(GetCharterRequest::default())
        .await?
        .into_inner();
    let charter = own.charter.unwrap_or_default();
    let summary = own.summary.unwrap_or_default();
    if let Some(office) = charter.offices.iter().find(|o| o.id == "anagrafe") {
        let today = jiff::Zoned::now()
            .with_time_zone(urpnet_proto::calendar::rome())
            .date()
            .to_string();
        let svg = urpnet_node::charter::export::door_sign_svg(
            &charter,
            office,
            &summary.body_name,
            &today,
        );
        let path = dir.path().join("targa-anagrafe.svg");
        std::fs::write(&path, &svg)?;
        println!(
            "\nc_c426   printed the door sign of {} ({} bytes of SVG, A4): {}",
            office.name,
            svg.len(),
            path.display()
        );
    }
    if let Some(public) = nodes[0].public_addr {
        println!(
            "(the same answers as JSON: curl http://{public}/charter/r_abruzz/services/tessera-sanitaria; JSON-LD for the website: /charter/c_c426/jsonld)"
        );
    }
    Ok(())
}
