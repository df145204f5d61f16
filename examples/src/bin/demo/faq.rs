//! The Region publishes shared FAQs; every comune holds them within seconds
//! and finds them with a typo.

use anyhow::Context as _;
use urpnet_node::cli::{self};
use urpnet_proto::v1::faq_desk_client::FaqDeskClient;
use urpnet_proto::v1::{FaqStatusRequest, GetFaqRequest, PublishFaqRequest, SearchFaqRequest};

use crate::Demo;
use crate::join::RunningNode;
use crate::steps::{heading, wait_until};

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo { nodes, .. } = demo;
    heading("The Region publishes shared FAQs; every comune receives them");
    let faq_client = |node: &RunningNode| {
        let (addr, token) = (node.desk_addr.to_string(), node.token.clone());
        async move {
            let (channel, token) = cli::channel_with_token(&addr, &token).await?;
            anyhow::Ok(FaqDeskClient::with_interceptor(channel, token))
        }
    };
    let mut region_faq = faq_client(&nodes[1]).await?;
    let celano_faq = faq_client(&nodes[0]).await?;
    let avezzano_faq = faq_client(&nodes[2]).await?;
    let regional: Vec<_> = urpnet_node::faq::sample::parse(urpnet_node::faq::sample::SAMPLE)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter(|e| e.scope == "regione")
        .collect();
    let published_at = std::time::Instant::now();
    for entry in &regional {
        region_faq
            .publish_faq(PublishFaqRequest {
                content: Some(entry.content.clone()),
                ..Default::default()
            })
            .await?;
    }
    let region_root = region_faq
        .faq_status(FaqStatusRequest {})
        .await?
        .into_inner()
        .root;
    println!(
        "r_abruzz published {} FAQs (examples/faq-sample.toml), each version signed with its key",
        regional.len()
    );
    for (id, client) in [("c_c426", &celano_faq), ("c_a515", &avezzano_faq)] {
        let status = wait_until("the FAQ set to reach every comune", || {
            let mut client = client.clone();
            let root = region_root.clone();
            async move {
                let s = client
                    .faq_status(FaqStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (s.root == root).then_some(s)
            }
        })
        .await?;
        println!(
            "{id}   holds the same set after {:.1} s: {} entries from {}, {} in its Italian search index",
            published_at.elapsed().as_secs_f64(),
            status.origins.iter().map(|o| o.entries).sum::<u32>(),
            status
                .origins
                .iter()
                .map(|o| o.origin.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            status.indexed
        );
    }
    println!(
        "(epidemic anti-entropy: each node exchanges digests with random peers every faq.interval, here 1 s; no central server)"
    );
    println!("\nA citizen calls Celano: \"devo cambiare il medico di famiglia, come si fa?\"");
    println!(
        "The operator types \"cambiare medico famigla\" (with a typo) and sees, before opening any ticket:"
    );
    let found = celano_faq
        .clone()
        .search_faq(SearchFaqRequest {
            query: "cambiare medico famigla".into(),
            territory: "066032".into(),
            limit: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("{}", cli::faq::hits_table(&found));
    let best = found.hits.first().context("an answer")?;
    let answer = celano_faq
        .clone()
        .get_faq(GetFaqRequest {
            key: best.key.clone(),
        })
        .await?
        .into_inner()
        .entry
        .and_then(|e| e.current)
        .and_then(|v| v.content)
        .context("content")?;
    println!(
        "Answer read to the citizen (from {}):\n{}",
        best.owner, answer.answer
    );

    Ok(())
}
