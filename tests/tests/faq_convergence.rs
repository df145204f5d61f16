//! Epidemic convergence of the FAQ set over 32 real nodes (the Region and
//! 31 comuni of Abruzzo from the ISTAT list), in-process with mutual TLS:
//! random publishes, revisions and retirements at random owners while six
//! nodes — the Region among them — are unreachable behind cut proxies, so
//! those six cannot call one another and their versions travel only through
//! relays. Every node ends with the same set, equal to the owners' latest
//! versions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use urpnet_proto::territory::Territory;
use urpnet_proto::v1::{GetFaqRequest, Level, RetireFaqRequest, ReviseFaqRequest};
use urpnet_tests::federation::{ABRUZZO, Office, TestFederation};
use urpnet_tests::proxy::Proxy;
use urpnet_tests::shared::{faq_status, publish, sample_faqs};
use urpnet_tests::{Backend, wait_for};

const NODES: usize = 32;
const CUT: usize = 6;

fn free_addr() -> SocketAddr {
    // A port outside the ephemeral range (see `free_port`).
    std::net::SocketAddr::from(([127, 0, 0, 1], urpnet_examples::smtp::free_port()))
}

/// The Region and the first 31 comuni of Abruzzo with an IPA code.
fn offices() -> Vec<Office> {
    let mut out = vec![ABRUZZO];
    for c in Territory::italy()
        .comuni()
        .filter(|c| c.region_code == "13" && urpnet_proto::ids::NodeId::new(&c.ipa_code).is_ok())
        .take(NODES - 1)
    {
        out.push(Office {
            id: Box::leak(c.ipa_code.clone().into_boxed_str()),
            level: Level::Comune,
            territory: Box::leak(
                vec![&*Box::leak(c.istat_code.clone().into_boxed_str())].into_boxed_slice(),
            ),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_nodes_converge_on_the_owners_latest_versions_through_relays() {
    let seed = std::env::var("URPNET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen::<u64>());
    eprintln!("seed {seed} (rerun with URPNET_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let offices = offices();
    assert_eq!(offices.len(), NODES);
    // The first CUT offices (the Region first) listen behind proxies.
    let mut proxies = Vec::new();
    let mut proxied = BTreeMap::new();
    for office in &offices[..CUT] {
        let listen = free_addr();
        let proxy = Proxy::start(listen).await;
        proxied.insert(office.id.to_string(), (listen, proxy.addr));
        proxies.push(proxy);
    }
    let fed = TestFederation::start(Backend::Sqlite, "faq_convergence", &offices, |c| {
        c.faq.interval = Duration::from_millis(250);
        c.faq.fanout = 2;
        c.metrics.listen = String::new();
        if let Some((listen, proxy)) = proxied.get(c.node.id.as_str()) {
            c.peering.listen = *listen;
            c.registry.advertise = format!("https://{proxy}");
        }
    })
    .await
    .expect("sqlite");
    // From now on nobody can call the six: they only call out.
    for proxy in &proxies {
        proxy.cut();
    }

    let mut clients = Vec::new();
    for office in &offices {
        clients.push(fed.node(office.id).faq().await);
    }
    let mut content = sample_faqs("comune");
    content.extend(sample_faqs("regione"));
    // (owner index, key) -> (version, retired)
    let mut expected: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    let mut owned: Vec<(usize, String)> = Vec::new();
    for step in 0..60 {
        let roll = rng.gen_range(0..10);
        if roll < 5 || owned.is_empty() {
            // Publishers: the cut nodes half of the time.
            let at = if rng.gen_bool(0.5) {
                rng.gen_range(0..CUT)
            } else {
                rng.gen_range(CUT..NODES)
            };
            let mut c = content[rng.gen_range(0..content.len())].clone();
            c.question = format!("{} (n. {step})", c.question);
            let key = publish(&mut clients[at], c).await;
            expected.insert(key.clone(), (1, false));
            owned.push((at, key));
        } else {
            let (at, key) = owned[rng.gen_range(0..owned.len())].clone();
            let (version, retired) = expected[&key];
            if retired {
                continue;
            }
            if roll < 9 {
                let mut c = content[rng.gen_range(0..content.len())].clone();
                c.question = format!("{} (rev. {step})", c.question);
                clients[at]
                    .revise_faq(ReviseFaqRequest {
                        key: key.clone(),
                        base_version: version,
                        content: Some(c),
                    })
                    .await
                    .expect("revise");
                expected.insert(key, (version + 1, false));
            } else {
                clients[at]
                    .retire_faq(RetireFaqRequest { key: key.clone() })
                    .await
                    .expect("retire");
                expected.insert(key, (version + 1, true));
            }
        }
        if step % 10 == 9 {
            tokio::task::yield_now().await;
        }
    }

    // Every node reaches the same set...
    let roots = wait_for(
        "all 32 nodes to hold the same FAQ set",
        Duration::from_secs(90),
        || {
            let clients = clients.clone();
            let n = expected.len();
            async move {
                let mut roots = Vec::new();
                for c in &clients {
                    let s = faq_status(c).await?;
                    let entries: u32 = s.origins.iter().map(|o| o.entries).sum();
                    if entries as usize != n {
                        return None;
                    }
                    roots.push(s.root);
                }
                roots.windows(2).all(|w| w[0] == w[1]).then_some(roots)
            }
        },
    )
    .await;
    assert_eq!(roots.len(), NODES);
    // ...and it is the owners' latest versions, checked at every node (the
    // cut ones included).
    for (i, c) in clients.iter().enumerate() {
        for (key, (version, retired)) in &expected {
            let got = c
                .clone()
                .get_faq(GetFaqRequest { key: key.clone() })
                .await
                .unwrap_or_else(|e| panic!("{key} at node {i}: {e}"))
                .into_inner()
                .entry
                .and_then(|e| e.current)
                .expect("current");
            assert_eq!(
                (got.version, got.retired),
                (*version, *retired),
                "{key} at node {i}"
            );
        }
    }
    let cut_refused: u64 = proxies.iter().map(Proxy::refused).sum();
    assert!(cut_refused > 0, "the cut proxies refused calls");
}
