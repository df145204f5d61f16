//! The registry end to end over mutual TLS on loopback, on SQLite and on
//! PostgreSQL: enrolment, routing, overflow, health, every refusal the issue
//! lists, bad input, the rate limit, and a real node joining the federation.

use std::time::Duration;

use tonic::Code;
use urpnet_proto::tls::{self, CertRequest, FederationCa, Identity, TlsMaterial};
use urpnet_proto::v1::{
    Channel, CreateTicketRequest, EnrolRequest, GetMembersRequest, GetTaxonomyRequest, Health,
    HeartbeatRequest, ImportTaxonomyRequest, Level, ListMembersRequest, LoadReport, MemberStatus,
    OverflowRequest, RegisterRequest, RouteRequest, SetStatusRequest,
};
use urpnet_tests::federation::{TestRegistry, counter};
use urpnet_tests::{Backend, TestNode, node_config, wait_for};

urpnet_tests::on_both_backends!(
    routing_and_overflow_follow_competence_and_capacity,
    refusals_name_the_reason_and_are_counted,
    bad_input_is_refused_and_nothing_is_stored,
    a_node_joins_keeps_the_member_list_and_renews_its_certificate,
);

const CELANO: &str = "066032";
const AVEZZANO: &str = "066006";

fn load(capacity: u32, waiting: u32, overflow: &[&str]) -> LoadReport {
    LoadReport {
        open_tickets: waiting + 3,
        queue_waiting: waiting,
        operators_on_duty: 2,
        capacity_per_hour: capacity,
        overflow_categories: overflow.iter().map(|s| s.to_string()).collect(),
    }
}

async fn beat(registry: &TestRegistry, who: &TlsMaterial, id: &str, load: LoadReport) {
    registry
        .registry_as(who)
        .heartbeat(HeartbeatRequest {
            node_id: id.into(),
            load: Some(load),
        })
        .await
        .unwrap_or_else(|e| panic!("heartbeat {id}: {e}"));
}

async fn route(
    registry: &TestRegistry,
    as_: &TlsMaterial,
    category: &str,
    territory: &str,
) -> urpnet_proto::v1::RouteResponse {
    registry
        .registry_as(as_)
        .route(RouteRequest {
            category: category.into(),
            territory: territory.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("route {category} {territory}: {e}"))
        .into_inner()
}

async fn routing_and_overflow_follow_competence_and_capacity(backend: Backend, test: &str) {
    let Some(registry) = TestRegistry::start(backend, test).await else {
        return;
    };
    registry.import_sample_taxonomy().await;
    let (celano, _) = registry.enrol("c_c426", Level::Comune, &[CELANO]).await;
    let (aquila, _) = registry.enrol("p_aq", Level::Provincia, &["066"]).await;
    let (abruzzo, _) = registry.enrol("r_abruzz", Level::Regione, &["13"]).await;
    let (inps, _) = registry.enrol("inps", Level::Nazionale, &[]).await;
    let (avezzano_neighbour, _) = registry.enrol("c_a345", Level::Comune, &["066049"]).await;
    beat(&registry, &celano, "c_c426", load(30, 40, &[])).await;
    beat(&registry, &aquila, "p_aq", load(50, 5, &["anagrafe"])).await;
    beat(
        &registry,
        &abruzzo,
        "r_abruzz",
        load(100, 10, &["anagrafe", "sanita"]),
    )
    .await;
    beat(&registry, &inps, "inps", load(500, 0, &[])).await;
    beat(
        &registry,
        &avezzano_neighbour,
        "c_a345",
        load(20, 25, &["anagrafe"]),
    )
    .await;

    // The competent body at each level, with the reason.
    let r = route(&registry, &celano, "rifiuti.ingombranti", CELANO).await;
    assert_eq!(r.member.as_ref().unwrap().id, "c_c426");
    assert!(!r.fallback);
    assert_eq!(r.competent_level, Level::Comune as i32);
    assert!(r.reason.contains("Celano"), "{}", r.reason);
    let r = route(&registry, &celano, "strade.provinciali", CELANO).await;
    assert_eq!(r.member.unwrap().id, "p_aq");
    let r = route(&registry, &celano, "sanita", CELANO).await;
    assert_eq!(r.member.unwrap().id, "r_abruzz");
    let r = route(&registry, &celano, "pensioni", CELANO).await;
    assert_eq!(r.member.unwrap().id, "inps");
    assert!(!r.fallback);

    // Avezzano is not a member: its comune matters go up to the province.
    let r = route(&registry, &celano, "rifiuti", AVEZZANO).await;
    assert_eq!(r.member.unwrap().id, "p_aq");
    assert!(r.fallback);
    assert!(r.competent_member_id.is_empty());
    assert!(r.reason.contains("no member serves it"), "{}", r.reason);

    // A suspended province is passed over, and the answer says so.
    registry
        .admin()
        .set_status(SetStatusRequest {
            id: "p_aq".into(),
            status: MemberStatus::Suspended as i32,
            reason: "test".into(),
        })
        .await
        .unwrap();
    let r = route(&registry, &celano, "strade.provinciali", CELANO).await;
    assert_eq!(r.member.unwrap().id, "r_abruzz");
    assert!(r.fallback);
    assert!(
        r.considered
            .iter()
            .any(|c| c.member_id == "p_aq" && c.reason.contains("suspended")),
        "{:?}",
        r.considered
    );

    // Overflow: only peers accepting the category, with spare capacity,
    // never the sender; the saturated c_a345 (25 waiting for 20/h) and the
    // suspended province are left out.
    let o = registry
        .registry_as(&celano)
        .overflow(OverflowRequest {
            category: "anagrafe.certificati".into(),
            from: String::new(),
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = o
        .candidates
        .iter()
        .map(|c| c.member.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(ids, ["r_abruzz"], "{}", o.reason);
    assert_eq!(o.candidates[0].spare, 90);
    assert!(o.reason.contains("1 saturated"), "{}", o.reason);

    // Each answer counts against the chosen peer until its next heartbeat.
    let o = registry
        .admin_registry()
        .overflow(OverflowRequest {
            category: "anagrafe".into(),
            from: "c_c426".into(),
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.candidates[0].spare, 89);
    registry.stop().await;
}

trait AdminRegistry {
    fn admin_registry(
        &self,
    ) -> urpnet_proto::v1::registry_client::RegistryClient<tonic::transport::Channel>;
}

impl AdminRegistry for TestRegistry {
    fn admin_registry(
        &self,
    ) -> urpnet_proto::v1::registry_client::RegistryClient<tonic::transport::Channel> {
        self.registry_as(&self.coordinator())
    }
}

async fn refusals_name_the_reason_and_are_counted(backend: Backend, test: &str) {
    let Some(registry) = TestRegistry::start(backend, test).await else {
        return;
    };
    registry.import_sample_taxonomy().await;
    let (celano, _) = registry.enrol("c_c426", Level::Comune, &[CELANO]).await;
    let (bari, _) = registry.enrol("c_a662", Level::Comune, &["072006"]).await;
    let before = registry.metrics().await;

    // No certificate: the handshake completes, the call is UNAUTHENTICATED.
    let anonymous = tls::anonymous_client_config(registry.ca().cert_pem()).unwrap();
    let channel = tls::channel(&registry.endpoint(), anonymous, Duration::from_secs(5)).unwrap();
    let err = urpnet_proto::v1::registry_client::RegistryClient::new(channel)
        .get_members(GetMembersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    // A certificate from another CA, and an expired one from ours: refused
    // in the handshake.
    let (other_ca, _) = FederationCa::generate("rogue", Duration::from_secs(3600)).unwrap();
    let (rogue, rogue_key) = other_ca
        .issue(&CertRequest {
            identity: Identity::Node("c_c426".parse_node()),
            hosts: vec![],
            validity: Duration::from_secs(3600),
            not_before: None,
        })
        .unwrap();
    let rogue = TlsMaterial {
        cert_pem: rogue.certificate_pem,
        key_pem: rogue_key,
        ca_pem: registry.ca().cert_pem().into(),
    };
    let err = registry
        .registry_as(&rogue)
        .get_members(GetMembersRequest {})
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    let (expired, expired_key) = registry
        .ca()
        .issue(&CertRequest {
            identity: Identity::Node("c_c426".parse_node()),
            hosts: vec![],
            validity: Duration::from_secs(60),
            not_before: Some(std::time::SystemTime::now() - Duration::from_secs(3600)),
        })
        .unwrap();
    let expired = TlsMaterial {
        cert_pem: expired.certificate_pem,
        key_pem: expired_key,
        ca_pem: registry.ca().cert_pem().into(),
    };
    let err = registry
        .registry_as(&expired)
        .get_members(GetMembersRequest {})
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);

    // A node certificate cannot call the admin service.
    let err = urpnet_proto::v1::registry_admin_client::RegistryAdminClient::new(
        registry.channel(&celano),
    )
    .list_members(ListMembersRequest {})
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // A node cannot heartbeat or register for another id.
    let err = registry
        .registry_as(&celano)
        .heartbeat(HeartbeatRequest {
            node_id: "c_a662".into(),
            load: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("c_c426"), "{err}");
    let err = registry
        .registry_as(&celano)
        .register(RegisterRequest {
            node_id: "c_a662".into(),
            endpoint: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Suspended, reinstated, revoked.
    let set = |status: MemberStatus| {
        let admin = registry.admin();
        async move {
            let mut admin = admin;
            admin
                .set_status(SetStatusRequest {
                    id: "c_a662".into(),
                    status: status as i32,
                    reason: "audit".into(),
                })
                .await
        }
    };
    set(MemberStatus::Suspended).await.unwrap();
    let err = registry
        .registry_as(&bari)
        .get_members(GetMembersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("suspended: audit"), "{err}");
    set(MemberStatus::Active).await.unwrap();
    registry
        .registry_as(&bari)
        .get_members(GetMembersRequest {})
        .await
        .unwrap();
    set(MemberStatus::Revoked).await.unwrap();
    let err = registry
        .registry_as(&bari)
        .get_members(GetMembersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("revoked"), "{err}");
    let err = set(MemberStatus::Active).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "revoked is final");

    // Each refusal was counted (metrics are process-wide: compare deltas).
    let after = registry.metrics().await;
    for (name, at_least) in [
        (
            "urpnet_registry_refused_total{reason=\"no_certificate\"",
            1.0,
        ),
        (
            "urpnet_registry_refused_total{reason=\"node_calls_admin\"",
            1.0,
        ),
        (
            "urpnet_registry_refused_total{reason=\"identity_mismatch\"",
            1.0,
        ),
        ("urpnet_registry_refused_total{reason=\"suspended\"", 1.0),
        ("urpnet_registry_refused_total{reason=\"revoked\"", 1.0),
        (
            "urpnet_tls_refused_total{server=\"registry\",reason=\"unknown_issuer\"",
            1.0,
        ),
        (
            "urpnet_tls_refused_total{server=\"registry\",reason=\"expired\"",
            1.0,
        ),
    ] {
        let delta = counter(&after, name) - counter(&before, name);
        assert!(delta >= at_least, "{name}: delta {delta}\n{after}");
    }

    // One member flooding is slowed; another's calls still succeed.
    let mut flood = Vec::new();
    for _ in 0..400 {
        let mut client = registry.registry_as(&celano);
        flood.push(tokio::spawn(async move {
            client
                .get_taxonomy(GetTaxonomyRequest {})
                .await
                .err()
                .map(|e| e.code())
        }));
    }
    let (bari2, _) = registry.enrol("c_h501", Level::Comune, &["058091"]).await;
    for _ in 0..20 {
        registry
            .registry_as(&bari2)
            .get_members(GetMembersRequest {})
            .await
            .expect("a quiet member is served during another's flood");
    }
    let mut exhausted = 0;
    for f in flood {
        if f.await.unwrap() == Some(Code::ResourceExhausted) {
            exhausted += 1;
        }
    }
    assert!(exhausted > 0, "the flood was never rate limited");
    registry.stop().await;
}

trait ParseNode {
    fn parse_node(&self) -> urpnet_proto::ids::NodeId;
}

impl ParseNode for str {
    fn parse_node(&self) -> urpnet_proto::ids::NodeId {
        urpnet_proto::ids::NodeId::new(self).unwrap()
    }
}

/// A change that makes a good enrolment bad.
type Breaker = Box<dyn Fn(&mut EnrolRequest)>;

async fn bad_input_is_refused_and_nothing_is_stored(backend: Backend, test: &str) {
    let Some(registry) = TestRegistry::start(backend, test).await else {
        return;
    };
    registry.import_sample_taxonomy().await;
    let (celano, signer) = registry.enrol("c_c426", Level::Comune, &[CELANO]).await;
    let good = || EnrolRequest {
        id: "c_a515".into(),
        display_name: "Comune di Avezzano".into(),
        level: Level::Comune as i32,
        territory: vec![AVEZZANO.into()],
        endpoint: "https://avezzano.example:7401".into(),
        signing_key: signer.verifying_key().as_bytes().to_vec(),
        csr_pem: tls::make_csr(&tls::generate_key().unwrap(), "c_a515").unwrap(),
    };
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "territory[0]",
            Box::new(|r| r.territory = vec!["66006".into()]),
        ),
        (
            "territory[0]",
            Box::new(|r| r.territory = vec!["066".into()]),
        ),
        ("territory", Box::new(|r| r.territory = vec![])),
        ("level", Box::new(|r| r.level = 0)),
        ("id", Box::new(|r| r.id = "Comune Avezzano".into())),
        (
            "endpoint",
            Box::new(|r| r.endpoint = "http://avezzano.example".into()),
        ),
        ("signing_key", Box::new(|r| r.signing_key = vec![1, 2, 3])),
        (
            // The identity point: a weak (small-order) key.
            "signing_key",
            Box::new(|r| {
                let mut weak = vec![0; 32];
                weak[0] = 1;
                r.signing_key = weak;
            }),
        ),
        (
            "csr_pem",
            Box::new(|r| {
                r.csr_pem =
                    "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                        .into()
            }),
        ),
        ("display_name", Box::new(|r| r.display_name = String::new())),
    ];
    for (field, break_it) in cases {
        let mut req = good();
        break_it(&mut req);
        let err = registry.admin().enrol(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err}");
        assert!(err.message().contains(field), "{field}: {err}");
    }
    let members = registry
        .admin()
        .list_members(ListMembersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        members.members.len(),
        1,
        "nothing stored by refused enrolments"
    );

    // Duplicate enrolment.
    let mut dup = good();
    dup.id = "c_c426".into();
    dup.territory = vec![CELANO.into()];
    assert_eq!(
        registry.admin().enrol(dup).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // Taxonomy files with a cycle, a missing level, an unknown level.
    for (bad, says) in [
        (
            "[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"comune\"\nparent = \"b\"\n[[category]]\ncode = \"b\"\nlabel = \"B\"\nlevel = \"comune\"\nparent = \"a\"\n",
            "cycle",
        ),
        ("[[category]]\ncode = \"a\"\nlabel = \"A\"\n", "level"),
        (
            "[[category]]\ncode = \"a\"\nlabel = \"A\"\nlevel = \"città\"\n",
            "unknown level",
        ),
    ] {
        let err = registry
            .admin()
            .import_taxonomy(ImportTaxonomyRequest { toml: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains(says), "{says}: {err}");
    }
    let t = registry.admin_taxonomy_version().await;
    assert_eq!(t, 1, "refused imports leave the version alone");

    // Routing and heartbeats check their input too.
    let err = registry
        .registry_as(&celano)
        .route(RouteRequest {
            category: "nonesiste".into(),
            territory: "12345".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("category") && err.message().contains("territory"),
        "{err}"
    );
    let err = registry
        .registry_as(&celano)
        .heartbeat(HeartbeatRequest {
            node_id: "c_c426".into(),
            load: Some(load(10, 0, &["anagrafe", "nonesiste"])),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("load.overflow_categories[1]"),
        "{err}"
    );
    registry.stop().await;
}

trait TaxonomyVersion {
    async fn admin_taxonomy_version(&self) -> u32;
}

impl TaxonomyVersion for TestRegistry {
    async fn admin_taxonomy_version(&self) -> u32 {
        self.registry_as(&self.coordinator())
            .get_taxonomy(GetTaxonomyRequest {})
            .await
            .unwrap()
            .into_inner()
            .taxonomy
            .unwrap()
            .version
    }
}

async fn a_node_joins_keeps_the_member_list_and_renews_its_certificate(
    backend: Backend,
    test: &str,
) {
    let Some((rdir, mut rconfig)) = TestRegistry::config(backend, test).await else {
        return;
    };
    rconfig.membership.heartbeat_interval = Duration::from_millis(200);
    let registry = TestRegistry::start_with(rconfig, Some(rdir)).await;
    registry.import_sample_taxonomy().await;
    let (bari, _) = registry.enrol("c_a662", Level::Comune, &["072006"]).await;

    let (ndir, mut config) = node_config("c_c426", Backend::Sqlite, test).await.unwrap();
    registry
        .enrol_node(&mut config, Level::Comune, &[CELANO])
        .await;
    // Renew as soon as it can: every certificate has less than this left.
    config.registry.renew_before = Duration::from_secs(365 * 86_400);
    config.registry.capacity_per_hour = 42;
    let first_serial = tls::TlsFiles::in_dir(&config.tls_dir())
        .load()
        .unwrap()
        .info()
        .unwrap()
        .serial;
    let node = TestNode::start_with(config.clone(), Some(ndir)).await;

    // Registered and heartbeating, with its load.
    let admin = registry.admin_registry();
    wait_for("the node to heartbeat", Duration::from_secs(20), || {
        let mut admin = admin.clone();
        async move {
            let members = admin
                .get_members(GetMembersRequest {})
                .await
                .ok()?
                .into_inner();
            let m = members.members.into_iter().find(|m| m.id == "c_c426")?;
            (m.health == Health::Reachable as i32 && m.load?.capacity_per_hour == 42).then_some(())
        }
    })
    .await;

    // It keeps the member list and the registry's taxonomy, on disk.
    let data_dir = config.node.data_dir.clone();
    wait_for(
        "the member list and taxonomy cached",
        Duration::from_secs(20),
        || {
            let data_dir = data_dir.clone();
            async move {
                let (members, taxonomy) = urpnet_node::registry_link::load_cache(&data_dir);
                (members?.is_active("c_a662") && taxonomy?.get("agricoltura").is_some())
                    .then_some(())
            }
        },
    )
    .await;
    // The operator sees the same list with `urpnet-node members`.
    let config_path = data_dir.parent().unwrap().join("urpnet.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let out = std::process::Command::new(urpnet_tests::binary("urpnet-node"))
        .arg("--config")
        .arg(&config_path)
        .args(["members", "--json"])
        .env_remove("URPNET_STORE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<_> = listed["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["c_a662", "c_c426"]);
    // ... and validates categories against it: `agricoltura` exists only in
    // the registry's taxonomy, not in the built-in one.
    let mut desk = node.desk().await;
    let mut rng = rand::thread_rng();
    let mut req = urpnet_examples::samples::request(&mut rng, CELANO, Channel::Phone);
    req.category = "agricoltura.contributi".into();
    desk.create_ticket(req.clone())
        .await
        .expect("a category of the registry's taxonomy is accepted");
    let err = desk
        .create_ticket(CreateTicketRequest {
            request_id: "other".into(),
            category: "nonesiste".into(),
            ..req
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A revocation reaches the node within a heartbeat or so.
    registry
        .admin()
        .set_status(SetStatusRequest {
            id: "c_a662".into(),
            status: MemberStatus::Revoked as i32,
            reason: "left the network".into(),
        })
        .await
        .unwrap();
    wait_for(
        "the revocation to reach the node",
        Duration::from_secs(10),
        || {
            let data_dir = data_dir.clone();
            async move {
                let (members, _) = urpnet_node::registry_link::load_cache(&data_dir);
                (!members?.is_active("c_a662")).then_some(())
            }
        },
    )
    .await;
    drop(bari);

    // The certificate was renewed without a restart, and the node still
    // heartbeats with the new one.
    let files = tls::TlsFiles::in_dir(&config.tls_dir());
    let renewed = wait_for(
        "the certificate to be renewed",
        Duration::from_secs(20),
        || {
            let files = files.clone();
            let first = first_serial.clone();
            async move {
                let serial = files.load().ok()?.info().ok()?.serial;
                (serial != first).then_some(serial)
            }
        },
    )
    .await;
    let mut client = registry.registry_as(&files.load().unwrap());
    client
        .heartbeat(HeartbeatRequest {
            node_id: "c_c426".into(),
            load: None,
        })
        .await
        .expect("the renewed certificate is accepted");
    let certs = registry
        .admin()
        .get_member(urpnet_proto::v1::GetMemberRequest {
            id: "c_c426".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert!(certs.iter().any(|c| c.serial == renewed), "{certs:?}");
    assert!(certs.len() >= 2);
    node.stop().await;
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_is_unreachable_after_three_intervals_and_back_when_it_reports() {
    let (dir, mut config) = TestRegistry::config(Backend::Sqlite, "health")
        .await
        .unwrap();
    config.membership.heartbeat_interval = Duration::from_millis(100);
    let registry = TestRegistry::start_with(config, Some(dir)).await;
    registry.import_sample_taxonomy().await;
    let (celano, _) = registry.enrol("c_c426", Level::Comune, &[CELANO]).await;
    let health = || {
        let mut admin = registry.admin_registry();
        async move {
            admin
                .get_members(GetMembersRequest {})
                .await
                .unwrap()
                .into_inner()
                .members[0]
                .health
        }
    };
    assert_eq!(health().await, Health::Unknown as i32);
    beat(&registry, &celano, "c_c426", load(10, 0, &[])).await;
    assert_eq!(health().await, Health::Reachable as i32);
    wait_for(
        "the member to turn unreachable",
        Duration::from_secs(10),
        || async { (health().await == Health::Unreachable as i32).then_some(()) },
    )
    .await;
    // Routing passes over it, and says why.
    let err = registry
        .registry_as(&celano)
        .route(RouteRequest {
            category: "rifiuti".into(),
            territory: CELANO.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    beat(&registry, &celano, "c_c426", load(10, 0, &[])).await;
    assert_eq!(health().await, Health::Reachable as i32);
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_switches_to_a_renewed_server_certificate_without_a_restart() {
    let registry = TestRegistry::start(Backend::Sqlite, "reload")
        .await
        .unwrap();
    let coordinator = registry.coordinator();
    let serial_seen = || async {
        // A fresh connection shows the server certificate now in use.
        let config = tls::anonymous_client_config(&coordinator.ca_pem).unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = tokio::net::TcpStream::connect(registry.addr).await.unwrap();
        let stream = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let der = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        tls::cert_info(&der).unwrap().serial
    };
    let before = serial_seen().await;
    let store = urpnet_registry::store::Store::open(&registry.config.database_url())
        .await
        .unwrap();
    let info = urpnet_registry::server::issue_server_cert(&registry.config, &registry.ca(), &store)
        .await
        .unwrap();
    store.close().await;
    assert_ne!(info.serial, before);
    wait_for(
        "the registry to serve the new certificate",
        Duration::from_secs(15),
        || async { (serial_seen().await == info.serial).then_some(()) },
    )
    .await;
    // The coordinators' connections still work.
    registry
        .admin()
        .list_members(ListMembersRequest {})
        .await
        .unwrap();
    registry.stop().await;
}

/// docs/security.md T2: no member can pose as the registry. Its certificate
/// never carries a host the coordinator did not approve or one of the
/// registry's own names, and every client pins the registry identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_member_can_pose_as_the_registry() {
    let (dir, mut config) = TestRegistry::config(Backend::Sqlite, "impostor")
        .await
        .expect("sqlite");
    config.grpc.hosts.push("registry.abruzzo.example".into());
    let registry = TestRegistry::start_with(config, Some(dir)).await;
    registry.import_sample_taxonomy().await;

    // The registry's own name is not a member's to take.
    let signer = urpnet_proto::signing::NodeSigner::generate("c_c426".parse_node());
    let key_pem = tls::generate_key().unwrap();
    let err = registry
        .admin()
        .enrol(EnrolRequest {
            id: "c_c426".into(),
            display_name: "Comune di Celano".into(),
            level: Level::Comune as i32,
            territory: vec![CELANO.into()],
            endpoint: "https://registry.abruzzo.example:7401".into(),
            signing_key: signer.verifying_key().as_bytes().to_vec(),
            csr_pem: tls::make_csr(&key_pem, "c_c426").unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("belongs to the registry"), "{err}");

    // Enrolled on 127.0.0.1: the member may move port, not host.
    let (member, _) = registry.enrol("c_c426", Level::Comune, &[CELANO]).await;
    let mut as_member = registry.registry_as(&member);
    let register = |endpoint: &str| RegisterRequest {
        endpoint: endpoint.into(),
        ..Default::default()
    };
    as_member
        .register(register("https://127.0.0.1:7999"))
        .await
        .expect("a new port is the member's to choose");
    let err = as_member
        .register(register("https://registry.abruzzo.example:7401"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::FailedPrecondition),
        "{err}"
    );
    let err = as_member
        .register(register("https://urp.comune.celano.aq.it:7401"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("coordinator"), "{err}");

    // The member serves "the registry" with its own (valid) certificate on a
    // host its certificate names: the host check alone lets it through, the
    // registry pin does not.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let incoming = tls::incoming(
        listener,
        tls::ReloadableTls::from_material(&member).unwrap(),
        "impostor",
        shutdown.clone(),
    );
    let (_, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
    );
    let endpoint = format!("https://127.0.0.1:{}", addr.port());
    let client_config = || registry.coordinator().client_config().unwrap();
    let check = |channel| async move {
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
    };
    let unpinned = tls::channel(&endpoint, client_config(), Duration::from_secs(5)).unwrap();
    assert!(check(unpinned).await.is_ok(), "host checks alone pass");
    let pinned =
        tls::channel_to_registry(&endpoint, client_config(), Duration::from_secs(5)).unwrap();
    let err = check(pinned).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("not urn:urpnet:registry"),
        "{err:?}"
    );
    // The real registry passes the pin.
    let real = tls::channel_to_registry(
        &registry.endpoint(),
        client_config(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(check(real).await.is_ok());
    shutdown.cancel();
    let _ = server.await;
    registry.stop().await;
}
