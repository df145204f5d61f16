//! Upward replication: a regional registry pushes its archive to a national
//! one, as a member of it. The national coordinator enrols this registry
//! (level regione, its region's territory) from the key, CSR and signing key
//! that `urpnet-registry upstream init` writes into `data_dir/upstream/`,
//! and the certificate and CA it answers with go into the same directory.
//!
//! The cursor is the highest `seq` the national registry acknowledged,
//! stored after each acknowledged batch. A crash between the push and the
//! cursor's write re-sends that batch, which the national registry counts as
//! duplicates (records are idempotent by id): the national archive is the
//! union of the regions' without duplicates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;
use urpnet_proto::ids::NodeId;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::tls::{self, TlsFiles};
use urpnet_proto::v1::archive_client::ArchiveClient;
use urpnet_proto::v1::{ArchiveBatch, ArchiveRecord, PayloadKind, PushArchiveRequest};

use super::{Archive, UpstreamState};
use crate::config::UpstreamSection;
use crate::error::{RegistryError, RegistryResult};

const CURSOR: &str = "upstream";

/// Where the upstream identity lives.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("upstream")
}

/// The signing key for batches sent upstream.
pub fn signing_key(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("signing.key")
}

/// Its public half, hex, for the national coordinator's `enrol`.
pub fn signing_public(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("signing.pub")
}

/// What `upstream init` made.
#[derive(Debug)]
pub struct UpstreamInit {
    /// The CSR to hand to the national coordinator.
    pub csr: PathBuf,
    /// The public signing key file, likewise.
    pub signing_public: PathBuf,
    /// False when the files existed and were kept.
    pub created: bool,
}

/// Makes the TLS key, the CSR and the signing key for `member_id` (kept if
/// present).
///
/// # Errors
/// A bad id or I/O failures.
pub fn init(data_dir: &Path, member_id: &str) -> anyhow::Result<UpstreamInit> {
    let id = NodeId::new(member_id).map_err(|e| anyhow::anyhow!("--member-id: {e}"))?;
    let d = dir(data_dir);
    std::fs::create_dir_all(&d)?;
    let files = TlsFiles::in_dir(&d);
    let csr = d.join("request.csr");
    let created = !signing_key(data_dir).exists();
    if created {
        let key_pem = tls::generate_key()?;
        tls::write_atomic(&files.key, key_pem.as_bytes(), true)?;
        tls::write_atomic(
            &csr,
            tls::make_csr(&key_pem, id.as_str())?.as_bytes(),
            false,
        )?;
        let signer = NodeSigner::generate(id);
        signer.save(&signing_key(data_dir))?;
        tls::write_atomic(
            &signing_public(data_dir),
            hex::encode(signer.verifying_key().as_bytes()).as_bytes(),
            false,
        )?;
    }
    Ok(UpstreamInit {
        csr,
        signing_public: signing_public(data_dir),
        created,
    })
}

/// The replication task.
#[derive(Debug)]
pub struct Upstream {
    archive: Arc<Archive>,
    config: UpstreamSection,
    data_dir: PathBuf,
}

impl Upstream {
    /// Replicates `archive` as configured.
    pub fn new(archive: Arc<Archive>, config: UpstreamSection, data_dir: PathBuf) -> Self {
        Self {
            archive,
            config,
            data_dir,
        }
    }

    fn connect(&self) -> anyhow::Result<(ArchiveClient<tonic::transport::Channel>, NodeSigner)> {
        let material = TlsFiles::in_dir(&dir(&self.data_dir)).load().map_err(|e| {
            anyhow::anyhow!("{e} (run `urpnet-registry upstream init` and install the certificate)")
        })?;
        let channel = tls::channel_to_registry(
            &self.config.endpoint,
            material.client_config()?,
            Duration::from_secs(5),
        )?;
        let signer = NodeSigner::load(
            NodeId::new(&self.config.member_id)?,
            &signing_key(&self.data_dir),
        )?;
        Ok((ArchiveClient::new(channel), signer))
    }

    /// Pushes every interval until `shutdown`; errors are logged, shown by
    /// `archive stats`, and retried at the next interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut link = None;
        loop {
            if link.is_none() {
                match self.connect() {
                    Ok(l) => link = Some(l),
                    Err(e) => self.report(Err(e.to_string())).await,
                }
            }
            if let Some((client, signer)) = link.as_mut() {
                let result = tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = self.catch_up(client, signer, &shutdown) => r,
                };
                if let Err(e) = &result {
                    tracing::warn!(endpoint = %self.config.endpoint, error = %e, "upward archive replication failed; retrying");
                }
                self.report(result.map(|_| ()).map_err(|e| e.to_string()))
                    .await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    async fn report(&self, result: Result<(), String>) {
        let (sent, pending) = match progress(&self.archive).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reading the upstream cursor");
                (0, 0)
            }
        };
        metrics::gauge!("urpnet_archive_upstream_pending").set(pending as f64);
        self.archive.set_upstream(UpstreamState {
            endpoint: self.config.endpoint.clone(),
            sent,
            pending,
            error: result.err().unwrap_or_default(),
        });
    }

    /// Sends batches until nothing is waiting; returns records sent.
    async fn catch_up(
        &self,
        client: &mut ArchiveClient<tonic::transport::Channel>,
        signer: &NodeSigner,
        shutdown: &CancellationToken,
    ) -> RegistryResult<u64> {
        let mut total = 0;
        while !shutdown.is_cancelled() {
            let (cursor, _) = cursor(&self.archive).await?;
            let (records, last) = read_after(&self.archive, cursor, self.config.batch).await?;
            if records.is_empty() {
                break;
            }
            let n = records.len() as u64;
            let batch = ArchiveBatch {
                author: signer.node().to_string(),
                first_seq: cursor as u64 + 1,
                records: records.iter().map(prost::Message::encode_to_vec).collect(),
            };
            let signed = signer.sign(PayloadKind::ArchiveBatch, batch.encode_to_vec());
            let resp = client
                .push_archive(PushArchiveRequest {
                    batch: Some(signed),
                })
                .await
                .map_err(|s| RegistryError::Internal(format!("upstream push: {}", s.message())))?
                .into_inner();
            if !resp.refused.is_empty() {
                tracing::warn!(
                    refused = resp.refused.len(),
                    first = %resp.refused[0].detail,
                    "the national registry refused records; they are not re-sent"
                );
            }
            set_cursor(&self.archive, last, n).await?;
            metrics::counter!("urpnet_archive_upstream_sent_total").increment(n);
            total += n;
            self.report(Ok(())).await;
        }
        Ok(total)
    }
}

async fn cursor(archive: &Archive) -> RegistryResult<(i64, u64)> {
    let row = sqlx::query(
        "SELECT CAST(cursor AS BIGINT), CAST(sent AS BIGINT) FROM archive_upstream WHERE name = $1",
    )
    .bind(CURSOR)
    .fetch_optional(archive.pool())
    .await?;
    Ok(match row {
        Some(r) => (r.try_get(0)?, r.try_get::<i64, _>(1)? as u64),
        None => (0, 0),
    })
}

async fn set_cursor(archive: &Archive, last: i64, n: u64) -> RegistryResult<()> {
    sqlx::query(
        "INSERT INTO archive_upstream (name, cursor, sent) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, \
         sent = archive_upstream.sent + excluded.sent",
    )
    .bind(CURSOR)
    .bind(last)
    .bind(n as i64)
    .execute(archive.pool())
    .await?;
    Ok(())
}

/// Records acknowledged upstream, and records waiting.
///
/// # Errors
/// Storage failures.
pub async fn progress(archive: &Archive) -> RegistryResult<(u64, u64)> {
    let (cursor, sent) = cursor(archive).await?;
    let pending: i64 =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM archive_records WHERE seq > $1")
            .bind(cursor)
            .fetch_one(archive.pool())
            .await?
            .try_get(0)?;
    Ok((sent, pending as u64))
}

async fn read_after(
    archive: &Archive,
    cursor: i64,
    limit: usize,
) -> RegistryResult<(Vec<ArchiveRecord>, i64)> {
    let rows = sqlx::query(
        "SELECT CAST(seq AS BIGINT), id, category, CAST(channel AS BIGINT), territory, \
         CAST(week AS BIGINT), CAST(outcome AS BIGINT), CAST(handling AS BIGINT), \
         CAST(handoffs AS BIGINT), CAST(overflow AS BIGINT), CAST(origin_level AS BIGINT), \
         CAST(competent_level AS BIGINT) FROM archive_records WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(cursor)
    .bind(limit as i64)
    .fetch_all(archive.pool())
    .await?;
    let mut last = cursor;
    let mut records = Vec::with_capacity(rows.len());
    for r in &rows {
        last = r.try_get(0)?;
        let int = |i: usize| -> Result<i64, sqlx::Error> { r.try_get::<i64, _>(i) };
        records.push(ArchiveRecord {
            id: r.try_get(1)?,
            category: r.try_get(2)?,
            channel: int(3)? as i32,
            territory: r.try_get(4)?,
            week: int(5)? as u32,
            outcome: int(6)? as i32,
            handling: int(7)? as i32,
            handoffs: int(8)? as u32,
            overflow: int(9)? != 0,
            origin_level: int(10)? as i32,
            competent_level: int(11)? as i32,
        });
    }
    Ok((records, last))
}
