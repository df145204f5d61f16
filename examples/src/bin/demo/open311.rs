//! The citizen's front door: a civic app speaks Open311 to Celano's node
//! over plain HTTP. It lists the services, files a pothole report with a
//! phone photo (whose GPS and device data the node strips), and follows it
//! by its tracking link. A report about a regional matter is handed to the
//! Region, whose name then shows as `agency_responsible`. The citizen gets
//! e-mails from Celano as both bodies work the reports (printed as the local
//! SMTP server received them).

use anyhow::Context as _;
use serde_json::Value;
use urpnet_node::auth::Role;
use urpnet_node::cli;
use urpnet_proto::v1::{
    AnswerHandoffRequest, ChangeStatusRequest, HandoffRequest, ListOffersRequest, Status,
};

use crate::Demo;
use crate::steps::{heading, note, wait_until};

pub(crate) async fn run(demo: &mut Demo) -> anyhow::Result<()> {
    let Demo {
        nodes, desk, smtp, ..
    } = demo;
    let celano = &nodes[0];
    let public = celano.public_addr.context("Celano's public listener")?;
    let base = format!("http://{public}");
    heading("A citizen's app reports a pothole through Open311 (plain HTTP)");
    // The app's key: an integration token of Celano's node.
    let (store, writer) = urpnet_node::server::open_store(&celano.config).await?;
    let (_, api_key) = urpnet_node::auth::add_operator(
        &store,
        "app-segnalazioni",
        Role::Integration,
        urpnet_proto::hlc::system_time_ms() as i64,
    )
    .await?;
    store.close().await;
    drop(store);
    let _ = writer.await;
    let http = reqwest::Client::new();
    let services: Value = http
        .get(format!("{base}/open311/v2/services.json"))
        .send()
        .await?
        .json()
        .await?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["service_code", "service_name", "group", "questions"]);
    for s in services.as_array().context("services")? {
        table.add_row([
            s["service_code"].as_str().unwrap_or_default().to_string(),
            s["service_name"].as_str().unwrap_or_default().to_string(),
            s["group"].as_str().unwrap_or_default().to_string(),
            if s["metadata"] == true { "yes" } else { "" }.to_string(),
        ]);
    }
    println!("GET {base}/open311/v2/services.json (from the taxonomy's citizen services):");
    println!("{table}");

    let photo = urpnet_examples::samples::photo_with_gps(640, 480);
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in [
        ("api_key", api_key.as_str()),
        ("service_code", "strade.buche"),
        ("lat", "42.08470"),
        ("long", "13.55690"),
        ("address_string", "Via Roma 52, Celano"),
        (
            "description",
            "Buca profonda davanti al civico 52, pericolosa per i motorini",
        ),
        ("attribute[pericolo]", "si"),
        ("attribute[larghezza_cm]", "40"),
        ("email", "anna.dicenso@example.it"),
        ("first_name", "Anna"),
        ("last_name", "Di Censo"),
    ] {
        form = form.text(k, v.to_string());
    }
    form = form.part(
        "media",
        reqwest::multipart::Part::bytes(photo.clone()).file_name("IMG_2041.jpg"),
    );
    let created: Value = http
        .post(format!("{base}/open311/v2/requests.json"))
        .header("Idempotency-Key", "demo-app-0001")
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let reference = created[0]["service_request_id"]
        .as_str()
        .context("service_request_id")?
        .to_string();
    let token = created[0]["token"].as_str().context("token")?.to_string();
    let tracking = created[0]["tracking_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "POST requests.json (multipart, a {} KB phone photo with GPS in its EXIF):",
        photo.len() / 1024
    );
    println!("  service_request_id {reference}\n  tracking link      {tracking}");
    let request: Value = http
        .get(format!("{base}/open311/v2/requests/{reference}.json"))
        .send()
        .await?
        .json()
        .await?;
    let media = request[0]["media_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stored = http.get(&media).send().await?.bytes().await?;
    let had = |b: &[u8], what: &[u8]| b.windows(what.len()).any(|w| w == what);
    println!(
        "  photo kept: {} KB at {media}; EXIF/GPS: {} (the phone's original had them: {})",
        stored.len() / 1024,
        if had(&stored, b"Exif") || had(&stored, b"PhoneCo") {
            "still there!"
        } else {
            "none"
        },
        had(&photo, b"Exif") && had(&photo, b"PhoneCo")
    );
    println!(
        "  agency_responsible {}, status {}, expected by {}",
        request[0]["agency_responsible"], request[0]["status"], request[0]["expected_datetime"]
    );

    // Celano works it; the citizen follows it by the link.
    let mut d = desk.clone();
    d.change_status(ChangeStatusRequest {
        ticket_id: token.clone(),
        status: Status::InProgress as i32,
        reason: "affidata alla squadra strade".into(),
        merged_into: String::new(),
    })
    .await?;
    note(desk, &token, true, "La squadra interverrà giovedì mattina").await?;
    let tracked: Value = http
        .get(tracking.replacen(
            &format!("/track/{reference}"),
            &format!("/track/{reference}.json"),
            1,
        ))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "The citizen's tracking page ({}): {} — \"{}\"",
        tracked["responsible"],
        tracked["status_label"],
        tracked["notes"][0]["text"].as_str().unwrap_or_default()
    );

    heading("A regional matter reported to Celano through Open311 reaches the Region");
    let created: Value = http
        .post(format!("{base}/open311/v2/requests.json"))
        .form(&[
            ("api_key", api_key.as_str()),
            ("service_code", "trasporti_regionali"),
            ("lat", "42.08470"),
            ("long", "13.55690"),
            (
                "description",
                "Il bus delle 7:10 per L'Aquila salta da una settimana la fermata di Celano",
            ),
            ("email", "anna.dicenso@example.it"),
            ("first_name", "Anna"),
            ("last_name", "Di Censo"),
            ("share_contact", "true"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let bus_ref = created[0]["service_request_id"]
        .as_str()
        .context("id")?
        .to_string();
    let bus_id = created[0]["token"].as_str().context("token")?.to_string();
    let offer = desk
        .clone()
        .handoff(HandoffRequest {
            ticket_id: bus_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "{bus_ref}: Celano hands it on; the registry routes it to {} ({})",
        offer.to_node, offer.decided_by
    );
    let region = &nodes[1];
    let mut region_desk = cli::connect(
        &region.desk_addr.to_string(),
        &region.token,
        region.config.desk.max_message_bytes,
    )
    .await?;
    wait_until("the offer at the Region", || {
        let mut r = region_desk.clone();
        let bus_ref = bus_ref.clone();
        async move {
            let offers = r
                .list_offers(ListOffersRequest::default())
                .await
                .ok()?
                .into_inner();
            offers
                .incoming
                .iter()
                .any(|o| o.ticket.as_ref().is_some_and(|t| t.reference == bus_ref))
                .then_some(())
        }
    })
    .await?;
    region_desk
        .accept_handoff(AnswerHandoffRequest {
            ticket_id: bus_id.clone(),
            reason: String::new(),
        })
        .await?;
    region_desk
        .change_status(ChangeStatusRequest {
            ticket_id: bus_id.clone(),
            status: Status::InProgress as i32,
            reason: "segnalato al gestore del trasporto".into(),
            merged_into: String::new(),
        })
        .await?;
    note(
        &mut region_desk,
        &bus_id,
        true,
        "Il gestore ripristina la fermata di Celano da lunedì",
    )
    .await?;
    let agency = wait_until("the Region as agency_responsible at Celano", || {
        let (http, url) = (
            http.clone(),
            format!("{base}/open311/v2/requests/{bus_ref}.json"),
        );
        async move {
            let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            let agency = v[0]["agency_responsible"].as_str()?.to_string();
            (agency != "Comune di Celano" && v[0]["status_notes"].is_string()).then_some(v)
        }
    })
    .await?;
    println!(
        "GET requests/{bus_ref}.json at Celano: agency_responsible {}, status_notes {}",
        agency[0]["agency_responsible"], agency[0]["status_notes"]
    );

    heading("The e-mails the citizen received (from Celano, which holds her contact)");
    match smtp {
        None => println!(
            "(no local SMTP server: install python3-aiosmtpd to see them; notices wait in Celano's queue)"
        ),
        Some(sink) => {
            let wanted = 4;
            let mails = wait_until("the citizen's e-mails", || {
                let mails: Vec<String> = sink
                    .messages()
                    .into_iter()
                    .filter(|m| m.starts_with("X-Envelope-To: anna.dicenso@example.it"))
                    .collect();
                async move { (mails.len() >= wanted).then_some(mails) }
            })
            .await?;
            for m in mails {
                let header = |name: &str| {
                    m.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                };
                println!("  To: {}\n  Subject: {}", header("To:"), header("Subject:"));
            }
        }
    }
    Ok(())
}
