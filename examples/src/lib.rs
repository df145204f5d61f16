//! Sample data for urpnet's demo, load generator, benchmarks and tests:
//! realistic Italian requests to a URP, about real comuni from the ISTAT list,
//! and [`federation`], a registry and nodes joined on loopback.

pub mod bench;
pub mod federation;
pub mod smtp;

/// `base` (a `postgres://` URL) with its database name replaced by `name`,
/// keeping host, user and query (`?host=/var/run/postgresql`).
pub fn postgres_url_with_database(base: &str, name: &str) -> String {
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let (path, query) = rest
        .split_once('?')
        .map_or((rest, None), |(p, q)| (p, Some(q)));
    let authority = path.split('/').next().unwrap_or_default();
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

pub mod samples {
    //! Requests citizens make to a URP, by category, with Italian wording.

    use rand::Rng;
    use rand::seq::SliceRandom;
    use urpnet_proto::territory::{Comune, Territory};
    use urpnet_proto::v1::{
        Channel, CitizenContact, Consent, Coordinates, CreateTicketRequest, Location, Priority,
    };

    /// (category, subject, description) of typical requests.
    pub const REQUESTS: &[(&str, &str, &str)] = &[
        (
            "rifiuti.ingombranti",
            "Ritiro di un divano",
            "Vorrei prenotare il ritiro gratuito di un divano e due sedie.",
        ),
        (
            "rifiuti.abbandono",
            "Rifiuti abbandonati vicino ai cassonetti",
            "Da una settimana ci sono sacchi e un materasso accanto ai cassonetti.",
        ),
        (
            "rifiuti",
            "Calendario della raccolta differenziata",
            "Non ho ricevuto il calendario della raccolta porta a porta.",
        ),
        (
            "strade.buche",
            "Buca profonda sulla carreggiata",
            "Una buca profonda all'altezza del civico, pericolosa per scooter e bici.",
        ),
        (
            "strade",
            "Marciapiede dissestato",
            "Le radici hanno sollevato il marciapiede: impossibile passare con il passeggino.",
        ),
        (
            "illuminazione",
            "Lampioni spenti",
            "Tre lampioni consecutivi spenti da giorni, la strada è completamente al buio.",
        ),
        (
            "verde",
            "Albero pericolante nel parco",
            "Dopo il temporale un ramo grande è rimasto appeso sopra i giochi dei bambini.",
        ),
        (
            "tributi.tari",
            "Avviso TARI non corretto",
            "L'avviso TARI riporta una superficie diversa da quella dichiarata.",
        ),
        (
            "tributi.imu",
            "Informazioni sul pagamento IMU",
            "Vorrei sapere come calcolare l'IMU per un immobile ereditato.",
        ),
        (
            "anagrafe.carta_identita",
            "Appuntamento per la carta d'identità",
            "Non trovo appuntamenti disponibili per rinnovare la carta d'identità.",
        ),
        (
            "anagrafe.residenza",
            "Cambio di residenza",
            "Ho presentato il cambio di residenza un mese fa e non ho avuto notizie.",
        ),
        (
            "anagrafe.certificati",
            "Certificato di stato di famiglia",
            "Come posso ottenere online il certificato di stato di famiglia?",
        ),
        (
            "servizi_sociali",
            "Contributo per l'affitto",
            "Vorrei informazioni sul bando per il contributo all'affitto.",
        ),
        (
            "scuola",
            "Iscrizione alla mensa scolastica",
            "Non riesco a completare l'iscrizione di mio figlio alla mensa.",
        ),
        (
            "mobilita.ztl",
            "Permesso ZTL per residenti",
            "Il mio permesso ZTL è scaduto, come lo rinnovo?",
        ),
        (
            "mobilita",
            "Fermata dell'autobus senza pensilina",
            "La fermata è senza pensilina e senza orari esposti.",
        ),
        (
            "polizia_locale",
            "Auto in sosta sul passo carrabile",
            "Un'auto blocca ogni giorno il passo carrabile del condominio.",
        ),
        (
            "edilizia",
            "Stato della pratica edilizia",
            "Vorrei conoscere lo stato della mia SCIA presentata a marzo.",
        ),
        (
            "ambiente",
            "Rumore notturno da un locale",
            "Musica ad alto volume fino alle 3 di notte da un locale della via.",
        ),
        (
            "sanita.prenotazioni",
            "Prenotazione visita specialistica",
            "Il CUP non mi offre date prima di sei mesi per una visita cardiologica.",
        ),
        (
            "pensioni",
            "Ritardo nel pagamento della pensione",
            "La pensione di questo mese non è stata accreditata.",
        ),
        (
            "lavoro",
            "Corsi di formazione per disoccupati",
            "Quali corsi di formazione regionali sono aperti?",
        ),
    ];

    const STREETS: &[&str] = &[
        "Via Roma",
        "Corso Vittorio Emanuele II",
        "Via Garibaldi",
        "Piazza del Municipio",
        "Via Dante Alighieri",
        "Via Giuseppe Mazzini",
        "Viale della Repubblica",
        "Via XX Settembre",
        "Via Cavour",
        "Via Marconi",
    ];

    const NAMES: &[&str] = &[
        "Maria Rossi",
        "Giuseppe Russo",
        "Anna Ferrari",
        "Francesco Esposito",
        "Giulia Bianchi",
        "Antonio Romano",
        "Francesca Colombo",
        "Luca Ricci",
        "Chiara Marino",
        "Marco Greco",
    ];

    /// City centres of some comuni (ISTAT code, latitude, longitude), so that
    /// located requests land where those comuni are.
    pub const CENTRES: &[(&str, f64, f64)] = &[
        ("072006", 41.1171, 16.8719), // Bari
        ("058091", 41.8931, 12.4828), // Roma
        ("015146", 45.4642, 9.1900),  // Milano
        ("063049", 40.8518, 14.2681), // Napoli
        ("001272", 45.0703, 7.6869),  // Torino
        ("082053", 38.1157, 13.3615), // Palermo
        ("066049", 42.3498, 13.3995), // L'Aquila
        ("066032", 42.0847, 13.5569), // Celano
    ];

    /// A comune by ISTAT code from the embedded list.
    pub fn comune(istat_code: &str) -> &'static Comune {
        Territory::italy().comune(istat_code).expect("known comune")
    }

    /// A realistic request about `istat_code`, from `channel`; located when
    /// the comune is one of [`CENTRES`].
    pub fn request(rng: &mut impl Rng, istat_code: &str, channel: Channel) -> CreateTicketRequest {
        let (category, subject, description) = *REQUESTS.choose(rng).expect("non-empty");
        let coordinates =
            CENTRES
                .iter()
                .find(|(code, _, _)| *code == istat_code)
                .map(|(_, lat, lon)| Coordinates {
                    latitude: lat + rng.gen_range(-0.01..0.01),
                    longitude: lon + rng.gen_range(-0.01..0.01),
                });
        let street = STREETS.choose(rng).expect("non-empty");
        let with_contact = rng.gen_bool(0.7);
        let name = NAMES.choose(rng).expect("non-empty");
        CreateTicketRequest {
            request_id: format!("sample-{}", ulid::Ulid::new()),
            category: category.into(),
            channel: channel as i32,
            subject: subject.into(),
            description: format!("{description} ({}, {})", street, comune(istat_code).name),
            location: Some(Location {
                istat_code: istat_code.into(),
                address: format!("{street} {}", rng.gen_range(1..200)),
                coordinates,
            }),
            attachments: Vec::new(),
            priority: if category.starts_with("strade") || category == "verde" {
                Priority::High as i32
            } else {
                Priority::Normal as i32
            },
            consent: Some(Consent {
                share_with_competent_body: rng.gen_bool(0.5),
                contact_for_updates: with_contact,
            }),
            citizen: with_contact.then(|| CitizenContact {
                full_name: (*name).into(),
                email: format!("{}@example.it", name.to_lowercase().replace(' ', ".")),
                phone: format!(
                    "+39 3{:02} {:07}",
                    rng.gen_range(20..99),
                    rng.gen_range(0..9_999_999)
                ),
                fiscal_code: String::new(),
            }),
            due_at: None,
            answers: if channel == Channel::Open311 {
                answers(category)
            } else {
                Vec::new()
            },
        }
    }

    /// A citizen's answers to the required questions of the sample
    /// taxonomy's services (a report through Open311 must give them).
    pub fn answers(category: &str) -> Vec<urpnet_proto::v1::ServiceAnswer> {
        let answer = |code: &str, value: &str| urpnet_proto::v1::ServiceAnswer {
            code: code.into(),
            value: value.into(),
        };
        match category {
            "strade.buche" => vec![answer("pericolo", "si")],
            "rifiuti.abbandono" => vec![answer("tipo", "sacchi")],
            _ => Vec::new(),
        }
    }

    /// Every channel, for spreading samples across them.
    pub const CHANNELS: &[Channel] = &[
        Channel::App,
        Channel::Web,
        Channel::Chat,
        Channel::Email,
        Channel::Pec,
        Channel::Phone,
        Channel::Desk,
        Channel::Social,
        Channel::Video,
        Channel::Open311,
    ];

    /// An anonymised archive record as a comune's node makes it: answered
    /// by phone within three days, no handoff, no overflow, comune to comune.
    /// Callers change what their case needs with struct update syntax, e.g.
    /// `ArchiveRecord { outcome: .., ..archive_record(id, c, t, w) }`. The
    /// tests, the demo and bench-archive all build their records from it.
    pub fn archive_record(
        id: Vec<u8>,
        category: &str,
        territory: &str,
        week: u32,
    ) -> urpnet_proto::v1::ArchiveRecord {
        use urpnet_proto::v1::{HandlingTime, Level, Outcome};
        urpnet_proto::v1::ArchiveRecord {
            id,
            category: category.into(),
            channel: Channel::Phone as i32,
            territory: territory.into(),
            week,
            outcome: Outcome::Answered as i32,
            handling: HandlingTime::Under3d as i32,
            handoffs: 0,
            overflow: false,
            origin_level: Level::Comune as i32,
            competent_level: Level::Comune as i32,
        }
    }

    /// A street photo as a phone takes it: a JPEG carrying an EXIF block
    /// with the camera's make (`PhoneCo`) and a GPS position, `width` x
    /// `height` pixels of a deterministic pattern (sizes the photo's bytes).
    pub fn photo_with_gps(width: u32, height: u32) -> Vec<u8> {
        let mut plain = std::io::Cursor::new(Vec::new());
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x ^ y) as u8, (y * 5) as u8])
        });
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 92)
            .encode_image(&img)
            .expect("an in-memory JPEG");
        let plain = plain.into_inner();
        // APP1 "Exif\0\0" + a little-endian TIFF: Make, and a GPS IFD with
        // GPSLatitudeRef; enough for any reader to find a position.
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"II*\0\x08\0\0\0");
        tiff.extend_from_slice(&2u16.to_le_bytes());
        for (tag, kind, count, value) in [(0x010fu16, 2u16, 8u32, 38u32), (0x8825, 4, 1, 46)] {
            tiff.extend_from_slice(&tag.to_le_bytes());
            tiff.extend_from_slice(&kind.to_le_bytes());
            tiff.extend_from_slice(&count.to_le_bytes());
            tiff.extend_from_slice(&value.to_le_bytes());
        }
        tiff.extend_from_slice(&0u32.to_le_bytes());
        tiff.extend_from_slice(b"PhoneCo\0");
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&2u32.to_le_bytes());
        tiff.extend_from_slice(b"N\0\0\0");
        tiff.extend_from_slice(&0u32.to_le_bytes());
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = plain[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&plain[2..]);
        out
    }
}
