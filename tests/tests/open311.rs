//! The node's public side over real HTTP: Open311 GeoReport v2 as civic apps
//! (and FixMyStreet) speak it, photos stripped of their metadata, the
//! tracking page, and every bad input refused in the spec's format with
//! nothing stored.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use urpnet_node::auth::Role;
use urpnet_tests::{Backend, TestNode};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(urpnet_tests::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(urpnet_tests::Backend::Postgres, concat!("postgres::", stringify!($name))).await;
            })*
        }
    };
}

both_backends!(
    a_civic_app_lists_services_files_a_report_with_a_photo_and_follows_it,
    bad_input_is_refused_in_the_spec_format_and_nothing_is_stored,
);

/// A node for Celano (`c_c426`: its own comune) with tight public limits
/// where a test needs them, and an integration and an operator token.
struct Celano {
    node: TestNode,
    app_key: String,
    office_key: String,
    base: String,
    http: reqwest::Client,
}

async fn celano(
    backend: Backend,
    test: &str,
    tune: impl FnOnce(&mut urpnet_node::NodeConfig),
) -> Option<Celano> {
    let (dir, mut config) = urpnet_tests::node_config("c_c426", backend, test).await?;
    config.node.name = "Comune di Celano".into();
    config.attachments.max_bytes = 1024 * 1024;
    tune(&mut config);
    let node = TestNode::start_with(config, Some(dir)).await;
    let app_key = node
        .add_operator("app-segnalazioni", Role::Integration)
        .await;
    let office_key = node.add_operator("backoffice", Role::Operator).await;
    let base = format!("http://{}", node.public_addr);
    Some(Celano {
        node,
        app_key,
        office_key,
        base,
        http: reqwest::Client::new(),
    })
}

impl Celano {
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let (status, body) = self.get(path).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    }

    /// A well-formed pothole report's fields.
    fn pothole<'a>(&'a self, description: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("api_key", self.app_key.as_str()),
            ("jurisdiction_id", "c_c426"),
            ("service_code", "strade.buche"),
            ("lat", "42.0847"),
            ("long", "13.5569"),
            ("address_string", "Via Roma 52, Celano"),
            ("description", description),
            ("attribute[pericolo]", "si"),
            ("attribute[larghezza_cm]", "40"),
            ("email", "anna.dicenso@example.it"),
            ("first_name", "Anna"),
            ("last_name", "Di Censo"),
        ]
    }

    /// How many tickets the node holds (through the Desk).
    async fn ticket_count(&self) -> usize {
        self.node
            .desk()
            .await
            .list_tickets(urpnet_proto::v1::ListTicketsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tickets
            .len()
    }
}

async fn a_civic_app_lists_services_files_a_report_with_a_photo_and_follows_it(
    backend: Backend,
    test: &str,
) {
    let Some(c) = celano(backend, test, |_| {}).await else {
        return;
    };
    // Discovery and services, in both formats.
    let (status, discovery) = c.get_json("/open311/v2/discovery.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        discovery["endpoints"][0]["url"],
        format!("{}/open311/v2", c.base)
    );
    let (status, services) = c.get_json("/open311/v2/services.json").await;
    assert_eq!(status, StatusCode::OK);
    let list = services.as_array().expect("an array");
    let buche = list
        .iter()
        .find(|s| s["service_code"] == "strade.buche")
        .expect("strade.buche offered");
    assert_eq!(buche["group"], "Strade e marciapiedi");
    assert_eq!(buche["metadata"], true);
    assert!(
        list.iter().all(|s| s["service_code"] != "tributi.imu"),
        "only citizen services are offered"
    );
    let (status, xml) = c.get("/open311/v2/services.xml").await;
    assert_eq!(status, StatusCode::OK);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("<service><service_code>strade.buche</service_code>"),
        "{xml}"
    );
    let (status, definition) = c.get_json("/open311/v2/services/strade.buche.json").await;
    assert_eq!(status, StatusCode::OK);
    let attributes = definition["attributes"].as_array().unwrap();
    assert_eq!(attributes[0]["code"], "pericolo");
    assert_eq!(attributes[0]["required"], true);
    assert_eq!(attributes[0]["datatype"], "singlevaluelist");
    assert_eq!(attributes[0]["values"][0]["key"], "si");
    assert_eq!(attributes[1]["order"], 2);

    // A report with a phone's photo (GPS in its EXIF), multipart as the
    // FixMyStreet apps send it.
    let photo = urpnet_examples::samples::photo_with_gps(320, 240);
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in c.pothole("Buca profonda davanti al civico 52") {
        form = form.text(k.to_string(), v.to_string());
    }
    form = form.part(
        "media",
        reqwest::multipart::Part::bytes(photo.clone())
            .file_name("IMG_2041.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    );
    let response = c
        .http
        .post(format!("{}/open311/v2/requests.json", c.base))
        .header("Idempotency-Key", "app-report-0001")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let created: Value = response.json().await.unwrap();
    let reference = created[0]["service_request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reference.starts_with("c_c426-"), "{reference}");
    let token = created[0]["token"].as_str().unwrap().to_string();
    let tracking_url = created[0]["tracking_url"].as_str().unwrap().to_string();
    assert!(tracking_url.starts_with(&format!("{}/track/{reference}?key=", c.base)));

    // A retry with the same Idempotency-Key is the same report.
    let mut again = reqwest::multipart::Form::new();
    for (k, v) in c.pothole("Buca profonda davanti al civico 52") {
        again = again.text(k.to_string(), v.to_string());
    }
    let retried: Value = c
        .http
        .post(format!("{}/open311/v2/requests.json", c.base))
        .header("Idempotency-Key", "app-report-0001")
        .multipart(again.part(
            "media",
            reqwest::multipart::Part::bytes(photo.clone()).file_name("IMG_2041.jpg"),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried[0]["service_request_id"], reference.as_str());
    assert_eq!(
        retried[0]["tracking_url"],
        tracking_url.as_str(),
        "the same key again"
    );
    assert_eq!(c.ticket_count().await, 1);

    // The request as apps read it back, JSON (an array) and XML.
    let (status, one) = c
        .get_json(&format!("/open311/v2/requests/{reference}.json"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = &one[0];
    assert_eq!(r["status"], "open");
    assert_eq!(r["service_code"], "strade.buche");
    assert_eq!(r["agency_responsible"], "Comune di Celano");
    assert_eq!(r["lat"], 42.0847);
    assert!(
        r["requested_datetime"]
            .as_str()
            .unwrap()
            .ends_with("+01:00"),
        "{r}"
    );
    assert!(r["expected_datetime"].is_string(), "the due date: {r}");
    assert!(
        r.get("email").is_none() && !one.to_string().contains("anna.dicenso"),
        "no personal data: {r}"
    );
    let media_url = r["media_url"].as_str().unwrap().to_string();
    let (status, xml) = c
        .get(&format!(
            "/open311/v2/requests.xml?service_request_id={reference}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        xml.contains(&format!(
            "<service_request_id>{reference}</service_request_id>"
        )),
        "{xml}"
    );
    let (_, listed) = c
        .get_json("/open311/v2/requests.json?status=open&service_code=strade.buche")
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, none) = c.get_json("/open311/v2/requests.json?status=closed").await;
    assert_eq!(
        none,
        serde_json::json!([]),
        "an empty list is an empty document"
    );
    let (status, by_token) = c
        .get_json(&format!("/open311/v2/tokens/{token}.json"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_token[0]["service_request_id"], reference.as_str());

    // The photo kept has no metadata left, and is an image.
    let stored = c.http.get(&media_url).send().await.unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(stored.headers()["content-type"], "image/jpeg");
    let stored = stored.bytes().await.unwrap();
    assert!(photo.windows(7).any(|w| w == b"PhoneCo"));
    assert!(!stored.windows(4).any(|w| w == b"Exif"), "EXIF stripped");
    assert!(
        !stored.windows(7).any(|w| w == b"PhoneCo"),
        "device stripped"
    );
    let decoded = image::load_from_memory(&stored).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (320, 240));

    // The back office answers (FixMyStreet's servicerequestupdates).
    let (status, update) = c
        .post_form(
            "/open311/v2/servicerequestupdates.json",
            &[
                ("api_key", c.office_key.as_str()),
                ("service_request_id", reference.as_str()),
                ("status", "FIXED"),
                ("description", "Buca riparata il 4 dicembre"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{update}");
    assert_eq!(update[0]["status"], "FIXED");
    let (_, one) = c
        .get_json(&format!("/open311/v2/requests/{reference}.json"))
        .await;
    assert_eq!(one[0]["status"], "closed");
    assert_eq!(one[0]["status_notes"], "Buca riparata il 4 dicembre");
    let (status, updates) = c.get_json("/open311/v2/servicerequestupdates.json").await;
    assert_eq!(status, StatusCode::OK);
    let updates = updates.as_array().unwrap();
    assert!(
        updates
            .iter()
            .any(|u| u["service_request_id"] == reference.as_str()
                && u["status"] == "FIXED"
                && u["description"] == "Buca riparata il 4 dicembre"),
        "{updates:?}"
    );

    // The citizen's tracking page: status and public notes, nobody's data.
    let path = tracking_url.trim_start_matches(&c.base).to_string();
    let (status, page) = c.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Risolta") && page.contains("Buca riparata il 4 dicembre"),
        "{page}"
    );
    assert!(page.contains("Comune di Celano"));
    assert!(
        !page.contains("anna.dicenso") && !page.contains("Di Censo"),
        "{page}"
    );
    let (status, json) = c
        .get_json(&path.replacen(&reference, &format!("{reference}.json"), 1))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["status"], "FIXED");
    // A wrong key and an unknown reference get the same answer.
    let (wrong_status, wrong) = c
        .get(&format!(
            "/track/{reference}?key=00000000000000000000000000000000"
        ))
        .await;
    let (unknown_status, unknown) = c
        .get("/track/c_c426-2026-999999?key=00000000000000000000000000000000")
        .await;
    assert_eq!(wrong_status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_status, StatusCode::NOT_FOUND);
    assert_eq!(wrong, unknown);

    // The same report through the Desk is the same ticket, with its answers.
    let got = c
        .node
        .desk()
        .await
        .get_ticket(urpnet_proto::v1::GetTicketRequest {
            reference: reference.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ticket = got.ticket.unwrap();
    assert_eq!(ticket.channel(), urpnet_proto::v1::Channel::Open311);
    assert_eq!(ticket.answers.len(), 2);
    assert_eq!(got.citizen.unwrap().email, "anna.dicenso@example.it");
    let metrics = c.node.metrics().await;
    assert!(
        metrics.contains("urpnet_http_requests_total{route=\"/open311/v2/{resource}\""),
        "metrics by route"
    );
    c.node.stop().await;
}

async fn bad_input_is_refused_in_the_spec_format_and_nothing_is_stored(
    backend: Backend,
    test: &str,
) {
    let Some(c) = celano(backend, test, |config| {
        config.public.max_body_bytes = 2 * 1024 * 1024;
    })
    .await
    else {
        return;
    };
    let with = |changes: &[(&'static str, &'static str)], drop: &[&str]| {
        let mut form: Vec<(String, String)> = c
            .pothole("Buca")
            .into_iter()
            .filter(|(k, _)| !drop.contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in changes {
            form.retain(|(key, _)| key != k);
            form.push((k.to_string(), v.to_string()));
        }
        form
    };
    let long = "x".repeat(10_001);
    type Case = (Vec<(String, String)>, StatusCode, &'static str);
    let cases: Vec<Case> = vec![
        (
            with(&[], &["api_key"]),
            StatusCode::FORBIDDEN,
            "api_key: is required",
        ),
        (
            with(&[("api_key", "urpnet_nottoken")], &[]),
            StatusCode::FORBIDDEN,
            "api_key: is not valid",
        ),
        (
            with(&[("service_code", "astrologia")], &[]),
            StatusCode::BAD_REQUEST,
            "service_code",
        ),
        (
            with(&[], &["lat", "long", "address_string"]),
            StatusCode::BAD_REQUEST,
            "location",
        ),
        (
            with(&[("lat", "123.0")], &[]),
            StatusCode::BAD_REQUEST,
            "lat/long: must be within",
        ),
        (
            with(&[("lat", "48.8566"), ("long", "2.3522")], &[]),
            StatusCode::BAD_REQUEST,
            "outside the area this node serves: Celano (066032)",
        ),
        (
            with(&[], &["attribute[pericolo]"]),
            StatusCode::BAD_REQUEST,
            "answers.pericolo",
        ),
        (
            with(&[("attribute[pericolo]", "forse")], &[]),
            StatusCode::BAD_REQUEST,
            "must be one of si, no",
        ),
        (
            with(&[("attribute[larghezza_cm]", "tanta")], &[]),
            StatusCode::BAD_REQUEST,
            "must be a number",
        ),
        (
            {
                let mut f = with(&[], &[]);
                f.retain(|(k, _)| k != "description");
                f.push(("description".into(), long.clone()));
                f
            },
            StatusCode::BAD_REQUEST,
            "description",
        ),
        (
            with(&[("jurisdiction_id", "c_a515")], &[]),
            StatusCode::NOT_FOUND,
            "jurisdiction_id",
        ),
        (
            with(&[("email", "non-una-mail")], &[]),
            StatusCode::BAD_REQUEST,
            "citizen.email",
        ),
        (
            with(&[("media_url", "ftp://example.it/x.jpg")], &[]),
            StatusCode::BAD_REQUEST,
            "media_url",
        ),
    ];
    for (form, status, expected) in cases {
        let r = c
            .http
            .post(format!("{}/open311/v2/requests.json", c.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{expected}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body[0]["code"], status.as_u16(), "{body}");
        let description = body[0]["description"].as_str().unwrap();
        assert!(description.contains(expected), "{expected}: {description}");
    }
    // XML errors look like the spec's.
    let r = c
        .http
        .post(format!("{}/open311/v2/requests.xml", c.base))
        .form(&with(&[], &["api_key"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let xml = r.text().await.unwrap();
    assert!(
        xml.contains("<errors><error><code>403</code><description>api_key"),
        "{xml}"
    );

    // Photos: not an image, a disguised PDF, over the attachment limit.
    for (bytes, expected) in [
        (b"%PDF-1.7\n1 0 obj".to_vec(), "JPEG, PNG or WebP"),
        (
            urpnet_examples::samples::photo_with_gps(16, 16)[..300].to_vec(),
            "media:",
        ),
        (
            urpnet_examples::samples::photo_with_gps(1400, 1400),
            "larger than 1048576 bytes",
        ),
    ] {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in c.pothole("Buca con foto") {
            form = form.text(k.to_string(), v.to_string());
        }
        let r = c
            .http
            .post(format!("{}/open311/v2/requests.json", c.base))
            .multipart(form.part(
                "media",
                reqwest::multipart::Part::bytes(bytes).file_name("foto.jpg"),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{expected}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body[0]["description"].as_str().unwrap().contains(expected),
            "{expected}: {body}"
        );
    }
    // A body over the limit: 413 before it is read whole, in the spec's
    // format. Raw HTTP, announcing 3 MB and sending none of it: the answer
    // comes from the Content-Length alone (an HTTP client that keeps
    // writing the body may see the server close first).
    let (head, body) = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(c.node.public_addr)
            .await
            .unwrap();
        let request = format!(
            "POST /open311/v2/requests.json HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
            c.node.public_addr,
            3 * 1024 * 1024
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).to_string();
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        (head.to_string(), body.to_string())
    };
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(body[0]["code"], 413);
    // XML is never parsed: a billion-laughs body is refused unread.
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><service_request><description>&lol2;</description></service_request>"#;
    let r = c
        .http
        .post(format!("{}/open311/v2/requests.xml", c.base))
        .header("content-type", "text/xml")
        .body(laughs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("Content-Type: must be"));
    // Filters and unknown resources.
    let (status, body) = c
        .get_json("/open311/v2/requests.json?start_date=ieri")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body[0]["description"]
            .as_str()
            .unwrap()
            .contains("start_date")
    );
    let (status, body) = c.get_json("/open311/v2/services/astrologia.json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body[0]["code"], 404);
    let (status, body) = c
        .get_json("/open311/v2/requests/c_c426-2026-424242.json")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body[0]["code"], 404);
    let (status, _) = c.get_json("/open311/v2/tokens/not-a-token.json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Back-office updates need a known status and an operator.
    let (status, body) = c
        .post_form(
            "/open311/v2/servicerequestupdates.json",
            &[
                ("api_key", c.app_key.as_str()),
                ("service_request_id", "c_c426-2026-000001"),
                ("status", "MAYBE"),
            ],
        )
        .await;
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
        "{body}"
    );

    assert_eq!(c.ticket_count().await, 0, "nothing was stored");
    c.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let Some(c) = celano(
        Backend::Sqlite,
        "sqlite::a_client_over_its_rate_gets_429",
        |config| {
            config.public.rate_per_second = 1;
            config.public.rate_burst = 2;
        },
    )
    .await
    else {
        return;
    };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let r = c
            .http
            .get(format!("{}/open311/v2/services.xml", c.base))
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let xml = r.text().await.unwrap();
            assert!(xml.contains("<code>429</code>"), "{xml}");
        }
    }
    assert_eq!(statuses[0], StatusCode::OK);
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Made-up api_keys in the query do not buy fresh buckets: each would
    // allow its burst; by address, three in a row exhaust it.
    let mut made_up = Vec::new();
    for _ in 0..3 {
        let r = c
            .http
            .get(format!(
                "{}/open311/v2/services.xml?api_key=urpnet_madeup{}",
                c.base,
                ulid::Ulid::new()
            ))
            .send()
            .await
            .unwrap();
        made_up.push(r.status());
    }
    assert!(
        made_up.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{made_up:?}"
    );
    // The bucket fills again.
    urpnet_tests::wait_for("the bucket to refill", Duration::from_secs(5), || {
        let (http, url) = (
            c.http.clone(),
            format!("{}/open311/v2/services.xml", c.base),
        );
        async move {
            let r = http.get(url).send().await.ok()?;
            (r.status() == StatusCode::OK).then_some(())
        }
    })
    .await;
    c.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_at_the_comune_about_a_regional_matter_shows_the_region_once_it_accepts() {
    use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation};
    let Some(federation) = TestFederation::start(
        Backend::Sqlite,
        "sqlite::open311_regional_matter",
        &[CELANO, ABRUZZO],
        |_| {},
    )
    .await
    else {
        return;
    };
    let celano = federation.node("c_c426");
    let region = federation.node("r_abruzz");
    let app_key = celano.add_operator("app", Role::Integration).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", celano.public_addr);
    let created: Value = http
        .post(format!("{base}/open311/v2/requests.json"))
        .form(&[
            ("api_key", app_key.as_str()),
            ("service_code", "trasporti_regionali"),
            ("lat", "42.0847"),
            ("long", "13.5569"),
            (
                "description",
                "Il bus delle 7:10 per L'Aquila salta la fermata di Celano",
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reference = created[0]["service_request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = created[0]["token"].as_str().unwrap().to_string();
    let mut desk = celano.desk().await;
    desk.handoff(urpnet_proto::v1::HandoffRequest {
        ticket_id: token.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut region_desk = region.desk().await;
    urpnet_tests::wait_for("the offer at the Region", Duration::from_secs(20), || {
        let mut d = region_desk.clone();
        async move {
            let offers = d
                .list_offers(urpnet_proto::v1::ListOffersRequest::default())
                .await
                .ok()?
                .into_inner();
            (!offers.incoming.is_empty()).then_some(())
        }
    })
    .await;
    region_desk
        .accept_handoff(urpnet_proto::v1::AnswerHandoffRequest {
            ticket_id: token.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    // As the member list names it (the enrolment's display name).
    let region_name = federation
        .registry
        .admin()
        .get_member(urpnet_proto::v1::GetMemberRequest {
            id: "r_abruzz".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap()
        .display_name;
    assert_ne!(region_name, "");
    let shown = urpnet_tests::wait_for(
        "the Region to be responsible at Celano",
        Duration::from_secs(20),
        || {
            let (http, url) = (
                http.clone(),
                format!("{base}/open311/v2/requests/{reference}.json"),
            );
            let region_name = region_name.clone();
            async move {
                let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                let agency = v[0]["agency_responsible"].as_str()?.to_string();
                (agency != "c_c426" && agency == region_name).then_some(agency)
            }
        },
    )
    .await;
    assert_eq!(shown, region_name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_side_serves_https_with_its_own_certificate() {
    use urpnet_proto::tls::{CertRequest, FederationCa, Identity};
    let Some((dir, mut config)) =
        urpnet_tests::node_config("c_c426", Backend::Sqlite, "sqlite::open311_https").await
    else {
        return;
    };
    // A certificate for 127.0.0.1 from a CA of the test's own.
    let (ca, _) =
        FederationCa::generate("Comune di Celano test CA", Duration::from_secs(86_400)).unwrap();
    let (issued, key) = ca
        .issue(&CertRequest {
            identity: Identity::Node(urpnet_proto::ids::NodeId::new("c_c426").unwrap()),
            hosts: vec!["127.0.0.1".into()],
            validity: Duration::from_secs(3600),
            not_before: None,
        })
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("public.crt"), dir.path().join("public.key"));
    std::fs::write(&cert_file, &issued.certificate_pem).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    config.public.tls_cert_file = cert_file;
    config.public.tls_key_file = key_file;
    let node = TestNode::start_with(config, Some(dir)).await;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://{}/open311/v2/services.json", node.public_addr);
    let services: Value =
        urpnet_tests::wait_for("the HTTPS listener", Duration::from_secs(10), || {
            let (https, url) = (https.clone(), url.clone());
            async move { https.get(url).send().await.ok()?.json().await.ok() }
        })
        .await;
    assert!(services.as_array().is_some_and(|s| !s.is_empty()));
    // Plain HTTP on the same port gets no answer a client could take for one.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://{}/open311/v2/services.json",
            node.public_addr
        ))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    node.stop().await;
}
