//! Randomised fault simulation over seeds (issue 19): a registry and four
//! nodes, each node's Peering port behind a fault-injecting proxy. A seeded
//! random schedule creates tickets, hands them between bodies, accepts and
//! declines, adds notes, publishes FAQ entries, partitions nodes, delays
//! their traffic (so messages on different connections overtake each
//! other) and restarts nodes. At the end, with the network healed, the
//! invariants must hold:
//!
//! - every acknowledged note is present exactly once at every body holding
//!   its ticket, and every holder has the same events;
//! - the folded states are equal at every holder;
//! - every node's FAQ set is the same (equal roots) and holds every
//!   acknowledged entry;
//! - no body but the origin holds a contact the citizen did not consent to
//!   share.
//!
//! The schedule is drawn from the seed; the interleaving with the network
//! and the nodes' own tasks is real (tokio and loopback sockets, not a
//! simulated scheduler), so a seed reproduces the same operations, not
//! always the same timing. Its deterministic twin, which replays a seed
//! exactly on a virtual network and clock, is
//! `node/src/peering/simulation.rs`. `URPNET_SIM_SEED=<seed>` reruns one seed;
//! `URPNET_SIM_BUDGET_SECS` runs seeds one after another for that long
//! (`.ci/run` gives it a fixed budget); without either, one random seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use urpnet_node::cli::Desk;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{
    AddNoteRequest, AnswerHandoffRequest, GetHistoryRequest, GetTicketRequest, HandoffRequest,
};
use urpnet_tests::Backend;
use urpnet_tests::federation::{ABRUZZO, AVEZZANO, CELANO, Office, SULMONA, TestFederation};
use urpnet_tests::proxy::Proxy;
use urpnet_tests::shared::{Faq, faq_status, publish, request, sample_faqs};

const OFFICES: [Office; 4] = [CELANO, AVEZZANO, SULMONA, ABRUZZO];
/// Operations per run.
const STEPS: usize = 150;

/// What the test knows was acknowledged.
#[derive(Debug, Default)]
struct Model {
    tickets: Vec<TicketModel>,
    faqs: Vec<String>,
}

#[derive(Debug, Clone)]
struct TicketModel {
    id: String,
    origin: usize,
    /// The node that last accepted it (or the origin).
    owner: usize,
    /// An offer the owner made and nobody answered yet.
    pending: Option<usize>,
    consent: bool,
    notes: Vec<String>,
    /// The origin and every body it was offered to.
    participants: Vec<usize>,
}

struct Sim {
    fed: TestFederation,
    proxies: Vec<Proxy>,
    desks: Vec<Desk>,
    faqs: Vec<Faq>,
}

impl Sim {
    async fn start(seed: u64) -> Sim {
        let listens: Vec<std::net::SocketAddr> = OFFICES
            .iter()
            .map(|_| {
                std::net::SocketAddr::from(([127, 0, 0, 1], urpnet_examples::smtp::free_port()))
            })
            .collect();
        let mut proxies = Vec::new();
        for addr in &listens {
            proxies.push(Proxy::start(*addr).await);
        }
        let advertised: Vec<(String, std::net::SocketAddr, std::net::SocketAddr)> = OFFICES
            .iter()
            .zip(&listens)
            .zip(&proxies)
            .map(|((o, l), p)| (o.id.to_string(), *l, p.addr))
            .collect();
        let fed = TestFederation::start(Backend::Sqlite, &format!("sim_{seed}"), &OFFICES, |c| {
            let (_, listen, proxy) = advertised
                .iter()
                .find(|(id, ..)| id == c.node.id.as_str())
                .expect("office");
            c.peering.listen = *listen;
            c.registry.advertise = format!("https://{proxy}");
            c.peering.max_backoff = Duration::from_millis(500);
            c.peering.anti_entropy_interval = Duration::from_secs(1);
            c.faq.interval = Duration::from_millis(500);
        })
        .await
        .expect("sqlite");
        let mut sim = Sim {
            fed,
            proxies,
            desks: Vec::new(),
            faqs: Vec::new(),
        };
        sim.connect().await;
        sim
    }

    async fn connect(&mut self) {
        self.desks.clear();
        self.faqs.clear();
        for o in OFFICES {
            self.desks.push(self.fed.node(o.id).desk().await);
            self.faqs.push(self.fed.node(o.id).faq().await);
        }
    }

    async fn history(&self, node: usize, id: &str) -> Option<Vec<urpnet_proto::v1::HistoryEntry>> {
        self.desks[node]
            .clone()
            .get_history(GetHistoryRequest {
                ticket_id: id.into(),
            })
            .await
            .ok()
            .map(|r| r.into_inner().entries)
    }

    async fn ticket(
        &self,
        node: usize,
        id: &str,
    ) -> Option<(
        urpnet_proto::v1::Ticket,
        Option<urpnet_proto::v1::CitizenContact>,
    )> {
        let r = self.desks[node]
            .clone()
            .get_ticket(GetTicketRequest {
                ticket_id: id.into(),
                reference: String::new(),
            })
            .await
            .ok()?
            .into_inner();
        Some((r.ticket?, r.citizen))
    }
}

/// One random operation; what was acknowledged goes into the model.
async fn step(sim: &mut Sim, model: &mut Model, rng: &mut StdRng, log: &mut Vec<String>) {
    let n = OFFICES.len();
    match rng.gen_range(0..100) {
        // A citizen calls a comune.
        0..=17 => {
            let origin = rng.gen_range(0..n - 1);
            let consent = rng.gen_bool(0.5);
            let category = if rng.gen_bool(0.5) {
                "sanita.prenotazioni"
            } else {
                "rifiuti.ingombranti"
            };
            let mut req = request(category, consent);
            req.request_id = format!("sim-{}", rng.r#gen::<u64>());
            if let Ok(r) = sim.desks[origin].create_ticket(req).await {
                let id = r.into_inner().ticket.expect("ticket").id;
                log.push(format!("create {id} at {}", OFFICES[origin].id));
                model.tickets.push(TicketModel {
                    id,
                    origin,
                    owner: origin,
                    pending: None,
                    consent,
                    notes: Vec::new(),
                    participants: vec![origin],
                });
            }
        }
        // The owner offers a ticket to another body.
        18..=34 => {
            let free: Vec<usize> = (0..model.tickets.len())
                .filter(|i| model.tickets[*i].pending.is_none())
                .collect();
            if free.is_empty() {
                return;
            }
            let t = free[rng.gen_range(0..free.len())];
            let owner = model.tickets[t].owner;
            let mut to = rng.gen_range(0..n - 1);
            if to >= owner {
                to += 1;
            }
            let r = sim.desks[owner]
                .handoff(HandoffRequest {
                    ticket_id: model.tickets[t].id.clone(),
                    to_node: OFFICES[to].id.into(),
                    reason: "simulazione".into(),
                    overflow: false,
                })
                .await;
            if r.is_ok() {
                log.push(format!(
                    "offer {} {}→{}",
                    model.tickets[t].id, OFFICES[owner].id, OFFICES[to].id
                ));
                model.tickets[t].pending = Some(to);
                if !model.tickets[t].participants.contains(&to) {
                    model.tickets[t].participants.push(to);
                }
            }
        }
        // The target answers an offer (if it arrived).
        35..=49 => {
            let offered: Vec<usize> = (0..model.tickets.len())
                .filter(|i| model.tickets[*i].pending.is_some())
                .collect();
            if offered.is_empty() {
                return;
            }
            let t = offered[rng.gen_range(0..offered.len())];
            let to = model.tickets[t].pending.expect("pending");
            let req = AnswerHandoffRequest {
                ticket_id: model.tickets[t].id.clone(),
                reason: "non di competenza".into(),
            };
            if rng.gen_bool(0.75) {
                if sim.desks[to].accept_handoff(req).await.is_ok() {
                    log.push(format!(
                        "accept {} at {}",
                        model.tickets[t].id, OFFICES[to].id
                    ));
                    model.tickets[t].owner = to;
                    model.tickets[t].pending = None;
                }
            } else if sim.desks[to].decline_handoff(req).await.is_ok() {
                log.push(format!(
                    "decline {} at {}",
                    model.tickets[t].id, OFFICES[to].id
                ));
                model.tickets[t].pending = None;
            }
        }
        // A note by any node that holds the ticket.
        50..=74 => {
            if model.tickets.is_empty() {
                return;
            }
            let t = rng.gen_range(0..model.tickets.len());
            // Mostly a participant; now and then a body that holds nothing
            // (refused, and nothing must come of it).
            let p = &model.tickets[t].participants;
            let at = if rng.gen_bool(0.9) {
                p[rng.gen_range(0..p.len())]
            } else {
                rng.gen_range(0..n)
            };
            let text = format!("nota {}", rng.r#gen::<u64>());
            let r = sim.desks[at]
                .add_note(AddNoteRequest {
                    ticket_id: model.tickets[t].id.clone(),
                    public: rng.gen_bool(0.5),
                    text: text.clone(),
                })
                .await;
            if r.is_ok() {
                log.push(format!(
                    "note {} at {}",
                    model.tickets[t].id, OFFICES[at].id
                ));
                model.tickets[t].notes.push(text);
            }
        }
        // An FAQ entry.
        75..=80 => {
            let at = rng.gen_range(0..n);
            let scope = if at == n - 1 { "regione" } else { "comune" };
            let mut content = sample_faqs(scope).into_iter().next().expect("sample");
            content.question = format!("{} ({})", content.question, rng.r#gen::<u32>());
            let key = publish(&mut sim.faqs[at], content).await;
            log.push(format!("faq {key} at {}", OFFICES[at].id));
            model.faqs.push(key);
        }
        // A partition, or its end.
        81..=88 => {
            let p = rng.gen_range(0..n);
            if rng.gen_bool(0.5) {
                log.push(format!("cut {}", OFFICES[p].id));
                sim.proxies[p].cut();
            } else {
                log.push(format!("heal {}", OFFICES[p].id));
                sim.proxies[p].heal();
            }
        }
        // Slow links: chunks held up to 40 ms.
        89..=94 => {
            let p = rng.gen_range(0..n);
            let ms = rng.gen_range(0..40);
            log.push(format!("delay {} {ms} ms", OFFICES[p].id));
            sim.proxies[p].set_delay(Duration::from_millis(ms));
        }
        // A node stops and starts again on its data.
        _ => {
            let p = rng.gen_range(0..n);
            log.push(format!("restart {}", OFFICES[p].id));
            sim.fed.restart(OFFICES[p].id, |_| {}).await;
            sim.connect().await;
        }
    }
}

/// Checks every invariant once the network is healed; `Err` says which
/// failed (while the nodes may still be converging).
async fn invariants(sim: &Sim, model: &Model) -> Result<(), String> {
    let n = OFFICES.len();
    for t in &model.tickets {
        let mut holders = Vec::new();
        for node in 0..n {
            if let Some(history) = sim.history(node, &t.id).await {
                holders.push((node, history));
            }
        }
        if !holders.iter().any(|(node, _)| *node == t.origin) {
            return Err(format!("{}: not at its origin", t.id));
        }
        if t.owner != t.origin && !holders.iter().any(|(node, _)| *node == t.owner) {
            return Err(format!("{}: not at its owner", t.id));
        }
        let ids = |h: &[urpnet_proto::v1::HistoryEntry]| -> Vec<String> {
            let mut v: Vec<String> = h
                .iter()
                .map(|e| {
                    let e = e.event.as_ref().expect("event");
                    format!("{}/{}", e.author_node, e.event_id)
                })
                .collect();
            v.sort();
            v
        };
        let first = ids(&holders[0].1);
        let unique: BTreeSet<&String> = first.iter().collect();
        if unique.len() != first.len() {
            return Err(format!("{}: an event held twice", t.id));
        }
        for (node, history) in &holders {
            if ids(history) != first {
                return Err(format!(
                    "{}: {} holds other events than {}\n{}",
                    t.id,
                    OFFICES[*node].id,
                    OFFICES[holders[0].0].id,
                    holders
                        .iter()
                        .map(|(n, h)| format!("at {}:\n{}", OFFICES[*n].id, describe(h)))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            let notes: Vec<&str> = history
                .iter()
                .filter_map(|e| match e.event.as_ref()?.kind.as_ref()? {
                    Kind::Note(n) => Some(n.text.as_str()),
                    _ => None,
                })
                .collect();
            for text in &t.notes {
                let count = notes.iter().filter(|n| *n == text).count();
                if count != 1 {
                    return Err(format!(
                        "{}: acknowledged note `{text}` held {count} times at {}",
                        t.id, OFFICES[*node].id
                    ));
                }
            }
        }
        // Folds equal, and no contact without consent.
        let mut states = BTreeMap::new();
        for (node, _) in &holders {
            let (ticket, contact) = sim
                .ticket(*node, &t.id)
                .await
                .ok_or_else(|| format!("{}: unreadable at {}", t.id, OFFICES[*node].id))?;
            if contact.is_some() && *node != t.origin && !t.consent {
                panic!(
                    "{}: {} holds the contact without the citizen's consent",
                    t.id, OFFICES[*node].id
                );
            }
            states.insert(
                *node,
                (
                    ticket.owner_node,
                    ticket.owner_epoch,
                    ticket.status,
                    ticket.event_count,
                    ticket.note_count,
                    ticket.pending_handoff.map(|p| p.to_node),
                    ticket.participants,
                ),
            );
        }
        let distinct: BTreeSet<_> = states.values().collect();
        if distinct.len() != 1 {
            return Err(format!("{}: folds differ: {states:?}", t.id));
        }
    }
    // Every node here is honest: none may be quarantined by another.
    for (node, desk) in sim.desks.iter().enumerate() {
        let peers = desk
            .clone()
            .list_peers(urpnet_proto::v1::ListPeersRequest {})
            .await
            .map_err(|e| format!("peers unreadable at {}: {e}", OFFICES[node].id))?
            .into_inner()
            .peers;
        if let Some(p) = peers.iter().find(|p| !p.quarantine_reason.is_empty()) {
            let mut histories = String::new();
            for t in &model.tickets {
                if p.quarantine_reason.contains(&t.id) {
                    for (other, office) in OFFICES.iter().enumerate() {
                        if let Some(h) = sim.history(other, &t.id).await {
                            histories.push_str(&format!("at {}:\n{}\n", office.id, describe(&h)));
                        }
                    }
                }
            }
            panic!(
                "{} quarantined the honest {}: {}\n{histories}",
                OFFICES[node].id, p.peer, p.quarantine_reason
            );
        }
    }
    let mut roots = BTreeSet::new();
    for faq in &sim.faqs {
        let status = faq_status(faq).await.ok_or("FAQ status unreadable")?;
        roots.insert(status.root);
        let held: usize = status.origins.iter().map(|o| o.entries as usize).sum();
        if held < model.faqs.len() {
            return Err(format!(
                "a node holds {held} FAQ entries of {}",
                model.faqs.len()
            ));
        }
    }
    if roots.len() != 1 {
        return Err(format!("FAQ sets differ: {roots:?}"));
    }
    Ok(())
}

/// A history, one line per event in fold order: stamp, author and place in
/// its chain, kind, and why it had no effect.
fn describe(history: &[urpnet_proto::v1::HistoryEntry]) -> String {
    history
        .iter()
        .filter_map(|h| {
            let e = h.event.as_ref()?;
            let hlc = e.hlc.unwrap_or_default();
            let kind = match e.kind.as_ref()? {
                Kind::HandoffOffered(o) => {
                    format!(
                        "offer to {} after [{}]",
                        o.to_node, o.after_decline_event_id
                    )
                }
                Kind::HandoffAccepted(a) => format!("accept {}", a.offer_event_id),
                Kind::HandoffDeclined(d) => format!("decline {}", d.offer_event_id),
                Kind::Note(_) => "note".into(),
                Kind::Created(_) => "created".into(),
                other => format!("{other:?}").chars().take(40).collect(),
            };
            Some(format!(
                "  {}.{:<5} {} #{} {} epoch {} {kind}{}",
                hlc.wall_ms,
                hlc.logical,
                e.author_node,
                e.author_seq,
                e.event_id,
                e.owner_epoch,
                if h.effective {
                    String::new()
                } else {
                    format!(" — NO EFFECT: {}", h.ineffective_reason)
                }
            ))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run(seed: u64) {
    eprintln!(
        "simulation seed {seed} (rerun: URPNET_SIM_SEED={seed} cargo test -p urpnet-tests --test simulation)"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sim = Sim::start(seed).await;
    let mut model = Model::default();
    let mut log = Vec::new();
    for _ in 0..STEPS {
        step(&mut sim, &mut model, &mut rng, &mut log).await;
    }
    for p in &sim.proxies {
        p.heal();
        p.set_delay(Duration::ZERO);
    }
    let deadline = Duration::from_secs(60);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        match invariants(&sim, &model).await {
            Ok(()) => break,
            Err(e) if started.elapsed() < deadline => {
                last = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "seed {seed}: {e} (60 s after healing; first failure seen: {last})\nschedule:\n{}\nrerun: URPNET_SIM_SEED={seed} cargo test -p urpnet-tests --test simulation",
                log.join("\n")
            ),
        }
    }
    eprintln!(
        "seed {seed}: {} tickets, {} notes, {} FAQ entries, converged {:?} after healing",
        model.tickets.len(),
        model.tickets.iter().map(|t| t.notes.len()).sum::<usize>(),
        model.faqs.len(),
        started.elapsed()
    );
    let Sim { fed, .. } = sim;
    drop(fed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules_of_faults_keep_every_invariant() {
    if let Some(seed) = std::env::var("URPNET_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run(seed).await;
        return;
    }
    let budget = std::env::var("URPNET_SIM_BUDGET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let started = Instant::now();
    let mut runs = 0;
    loop {
        run(rand::random()).await;
        runs += 1;
        match budget {
            Some(b) if started.elapsed() < b => continue,
            _ => break,
        }
    }
    eprintln!("{runs} seed(s) in {:?}", started.elapsed());
}
