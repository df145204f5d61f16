//! What operators and their tools rely on: gRPC health, reflection in both
//! protocol versions, Prometheus metrics, and group commit visible in them.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use urpnet_examples::samples;
use urpnet_proto::v1::Channel;
use urpnet_tests::{Backend, TestNode};

async fn channel(node: &TestNode) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", node.desk_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_in_v1_and_v1alpha() {
    let node = TestNode::start("c_a662", Backend::Sqlite, "health")
        .await
        .unwrap();
    let ch = channel(&node).await;
    let status = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "urpnet.v1.Desk".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let unknown = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);

    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(ch.clone())
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("no list")
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"urpnet.v1.Desk".to_string()), "{names:?}");
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );
        for served in [
            "urpnet.v1.FaqDesk",
            "urpnet.v1.CharterDesk",
            "urpnet.v1.AppointmentDesk",
        ] {
            assert!(names.contains(&served.to_string()), "{served}: {names:?}");
        }
        // Only what this port serves: the peering and registry APIs are
        // not listed on the Desk port.
        for elsewhere in [
            "urpnet.v1.Peering",
            "urpnet.v1.FaqExchange",
            "urpnet.v1.RegistryAdmin",
        ] {
            assert!(
                !names.contains(&elsewhere.to_string()),
                "{elsewhere}: {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "urpnet.v1.Desk".into(),
            )),
        };
        let mut stream = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = resp.message_response else {
            panic!("no descriptor")
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    node.stop().await;
}

/// Sum and count of a Prometheus histogram in `text`.
fn histogram(text: &str, name: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}_{suffix}")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (value("sum"), value("count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_share_commits_and_metrics_show_it() {
    let node = TestNode::start("c_a662", Backend::Sqlite, "group commit")
        .await
        .unwrap();
    let desk = node.desk().await;
    let before = histogram(&node.metrics().await, "urpnet_store_commit_batch_size");

    let creates = 400;
    let mut tasks = tokio::task::JoinSet::new();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..creates {
        let mut desk = desk.clone();
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(i);
            let req = samples::request(&mut rng, "072006", Channel::App);
            let r = desk.create_ticket(req).await.unwrap();
            drop(permit);
            r.into_inner().ticket.unwrap().id
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(id) = tasks.join_next().await {
        ids.insert(id.unwrap());
    }
    assert_eq!(ids.len(), creates as usize);

    let after = histogram(&node.metrics().await, "urpnet_store_commit_batch_size");
    let (writes, commits) = (after.0 - before.0, after.1 - before.1);
    assert!(
        writes >= creates as f64,
        "every create went through the writer: {writes}"
    );
    assert!(
        commits < writes,
        "{writes} writes in {commits} commits: creates must share commits"
    );
    let text = node.metrics().await;
    assert!(
        text.contains(
            "urpnet_grpc_requests_total{server=\"node\",rpc=\"CreateTicket\",code=\"Ok\"}"
        ),
        "{text}"
    );
    assert!(text.contains("urpnet_tickets_created_total{channel=\"app\"}"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_without_wal_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = urpnet_node::store::Store::open(&urpnet_node::store::StoreOptions {
        url: "sqlite::memory:".into(),
        blob_dir: dir.path().join("blobs"),
        max_batch: 8,
        read_connections: 1,
        node: "c_a662".into(),
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("journal_mode=WAL and synchronous=FULL"),
        "{err}"
    );
}
