//! Writes the fuzzers' seed corpus (`fuzz/seeds/<target>/`) from real
//! objects: the sample charters, FAQ collection, taxonomy and configuration
//! templates the project ships, events and versions signed with the fuzz
//! key, photos encoded by the `image` crate, a multipart report. Run it
//! again when a format changes:
//!
//! ```sh
//! cargo run -p urpnet-examples --bin fuzz-seeds
//! ```

use std::path::{Path, PathBuf};

use prost::Message as _;
use urpnet_node::fuzz::FUZZ_AUTHOR;
use urpnet_proto::ids::{NodeId, TicketId};
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::v1::ticket_event::Kind;
use urpnet_proto::v1::{
    ArchiveBatch, ArchiveRecord, Channel, CharterVersion, Consent, Created, DeliverRequest,
    FaqPushRequest, FaqVersion, Hlc, Location, Note, PayloadKind, SharedKind, TicketEvent,
};

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let seeds = root.join("fuzz/seeds");
    let read = |p: &str| std::fs::read_to_string(root.join(p));
    let write = |target: &str, name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let dir: PathBuf = seeds.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        Ok(())
    };
    let with = |mode: u8, rest: &[u8]| [&[mode][..], rest].concat();

    let node = NodeId::new(FUZZ_AUTHOR)?;
    let signer = NodeSigner::from_seed(node.clone(), [7; 32]);
    let now = 1_780_000_000_000;
    let hlc = |n: u64| {
        Some(Hlc {
            wall_ms: now + n,
            logical: 0,
        })
    };

    // Ticket events: a Created and a note, alone and in a Deliver batch.
    let ticket = TicketId::mint(&node).to_string();
    let created = TicketEvent {
        event_id: ulid::Ulid::new().to_string(),
        ticket_id: ticket.clone(),
        hlc: hlc(0),
        author_node: FUZZ_AUTHOR.into(),
        actor: "op-1".into(),
        author_seq: 1,
        kind: Some(Kind::Created(Created {
            reference: format!("{FUZZ_AUTHOR}-2026-000001"),
            category: "ambiente.rifiuti".into(),
            channel: Channel::Phone as i32,
            subject: "Rifiuti non ritirati".into(),
            description: "In via Roma i sacchi sono fuori da tre giorni.".into(),
            location: Some(Location {
                istat_code: "066032".into(),
                address: "Via Roma 1".into(),
                coordinates: None,
            }),
            consent: Some(Consent::default()),
            ..Default::default()
        })),
        ..Default::default()
    };
    let note = TicketEvent {
        event_id: ulid::Ulid::new().to_string(),
        ticket_id: ticket,
        hlc: hlc(1),
        author_node: FUZZ_AUTHOR.into(),
        author_seq: 2,
        prev_hash: sha(&created.encode_to_vec()),
        kind: Some(Kind::Note(Note {
            public: true,
            text: "Segnalato all'ufficio.".into(),
        })),
        ..Default::default()
    };
    let events = [created, note];
    for (i, e) in events.iter().enumerate() {
        write(
            "ticket_events",
            &format!("signed-{i}"),
            &with(1, &e.encode_to_vec()),
        )?;
    }
    let deliver = DeliverRequest {
        events: events
            .iter()
            .map(|e| signer.sign(PayloadKind::TicketEvent, e.encode_to_vec()))
            .collect(),
        contacts: vec![],
    };
    write(
        "ticket_events",
        "deliver",
        &with(0, &deliver.encode_to_vec()),
    )?;

    // FAQ and charter versions, alone and in a push.
    let mut push = FaqPushRequest {
        kind: SharedKind::Faq as i32,
        ..Default::default()
    };
    let samples = urpnet_node::faq::sample::parse(&read("examples/faq-sample.toml")?)
        .map_err(anyhow::Error::msg)?;
    for (i, s) in samples.into_iter().take(3).enumerate() {
        let v = FaqVersion {
            entry_id: ulid::Ulid::new().to_string(),
            owner: FUZZ_AUTHOR.into(),
            version: 1,
            seq: i as u64 + 1,
            published_at: hlc(i as u64),
            retired: false,
            content: Some(s.content),
        };
        write(
            "shared_versions",
            &format!("faq-{i}"),
            &with_two(1, 0, &v.encode_to_vec()),
        )?;
        push.versions
            .push(signer.sign(PayloadKind::FaqVersion, v.encode_to_vec()));
    }
    write(
        "shared_versions",
        "faq-push",
        &with_two(0, 0, &push.encode_to_vec()),
    )?;
    let taxonomy = urpnet_node::taxonomy::builtin();
    let charter_text = read("examples/charters/celano.toml")?;
    let charter = urpnet_node::charter::import::from_toml(
        "celano.toml",
        &charter_text,
        FUZZ_AUTHOR,
        Some(&taxonomy),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let v = CharterVersion {
        entry_id: "charter".into(),
        owner: FUZZ_AUTHOR.into(),
        version: 1,
        seq: 1,
        published_at: hlc(0),
        retired: false,
        charter: Some(charter),
    };
    write(
        "shared_versions",
        "charter",
        &with_two(1, 1, &v.encode_to_vec()),
    )?;

    // Charters as TOML and as the two CSV sheets.
    for name in ["celano", "regione-abruzzo"] {
        let text = read(&format!("examples/charters/{name}.toml"))?;
        write(
            "charter_import",
            &format!("{name}.toml"),
            &with(0, text.as_bytes()),
        )?;
    }
    let offices = "id,nome,indirizzo,comune,orari\nanagrafe,Ufficio Anagrafe,Via Roma 1,066032,lun-ven 09:00-12:30\n";
    let services = "id,nome,categoria,ufficio,canali,documenti,costo,giorni\ncie,Carta d'identità,anagrafe.documenti,anagrafe,sportello,fototessera; vecchio documento,22.21,7\n";
    write(
        "charter_import",
        "sheets.csv",
        &with(1, format!("{offices}\0{services}").as_bytes()),
    )?;

    // Configuration, taxonomy, FAQ collection: the shipped files.
    write(
        "node_config",
        "template.toml",
        read("node/src/config_template.toml")?.as_bytes(),
    )?;
    write(
        "registry_config",
        "template.toml",
        read("registry/src/config_template.toml")?.as_bytes(),
    )?;
    write(
        "taxonomy",
        "default.toml",
        read("node/src/taxonomy_default.toml")?.as_bytes(),
    )?;
    write(
        "taxonomy",
        "example.toml",
        read("examples/taxonomy.toml")?.as_bytes(),
    )?;
    write(
        "faq_sample",
        "sample.toml",
        read("examples/faq-sample.toml")?.as_bytes(),
    )?;

    // Archive batch: records as a node makes them.
    let record = |category: &str, territory: &str| ArchiveRecord {
        id: vec![1; 16],
        category: category.into(),
        channel: Channel::Web as i32,
        territory: territory.into(),
        week: 202_640,
        ..Default::default()
    };
    let batch = ArchiveBatch {
        author: FUZZ_AUTHOR.into(),
        first_seq: 1,
        records: vec![
            record("ambiente.rifiuti", "066032").encode_to_vec(),
            record("sanita.prenotazioni", "066").encode_to_vec(),
        ],
    };
    write("archive_batch", "batch", &batch.encode_to_vec())?;

    // Open311 bodies: form-encoded and multipart with a photo.
    write(
        "open311_form",
        "form",
        &with(0, b"service_code=ambiente.rifiuti&lat=42.05&long=13.55&description=Sacchi+in+strada&email=a%40b.it&attribute%5Bx%5D%5B%5D=1"),
    )?;
    let png = tiny_image(image::ImageFormat::Png);
    let mut multipart = Vec::new();
    multipart.extend_from_slice(
        b"--XyZ\r\nContent-Disposition: form-data; name=\"service_code\"\r\n\r\nambiente.rifiuti\r\n--XyZ\r\nContent-Disposition: form-data; name=\"media\"; filename=\"foto.png\"\r\nContent-Type: image/png\r\n\r\n",
    );
    multipart.extend_from_slice(&png);
    multipart.extend_from_slice(b"\r\n--XyZ--\r\n");
    write("open311_form", "multipart", &with(1, &multipart))?;

    // Photos in each accepted family.
    for (name, format) in [
        ("photo.png", image::ImageFormat::Png),
        ("photo.jpg", image::ImageFormat::Jpeg),
        ("photo.webp", image::ImageFormat::WebP),
    ] {
        write("photo", name, &tiny_image(format))?;
    }

    // Calendar texts: uid, summary, description, location, url, organizer,
    // attendee.
    write(
        "ics",
        "booking",
        "01JD3Q5Z8W2N4V6X7Y9A0B1C2D@c_c426.urpnet\0Carta d'identità elettronica — Comune di Celano\0Porta: fototessera; codice fiscale.\nPer spostare: https://celano.example/a/x\0Via Sandro Pertini, Celano\0https://celano.example/a/x\0anagrafe@comune.celano.aq.it\0maria.rossi@example.it".as_bytes(),
    )?;
    println!("seeds written under {}", seeds.display());
    Ok(())
}

fn with_two(a: u8, b: u8, rest: &[u8]) -> Vec<u8> {
    [&[a, b][..], rest].concat()
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

fn tiny_image(format: image::ImageFormat) -> Vec<u8> {
    let picture =
        image::RgbImage::from_fn(16, 12, |x, y| image::Rgb([x as u8 * 16, y as u8 * 20, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(picture)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}
