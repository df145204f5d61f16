//! The anonymised archive at the registry (DESIGN.md §6–§7): ingest of signed
//! batches from members, queries and trends with small-cell protection, and
//! upward replication to a national registry.
//!
//! - Ingest is serialised (one batch at a time) and one transaction per
//!   batch: the records, the weekly rollup and the sender's tally commit
//!   together, so a crash loses a whole batch or nothing, and the sender's
//!   retry stores each record once (idempotent by record id).
//! - Queries that group only by category, territory and week read a rollup:
//!   `archive_weekly_province` at province and region level,
//!   `archive_weekly` (by comune) otherwise; the others read
//!   `archive_records` through its week index. Every published figure goes through [`publish::protect`].

pub mod cli;
pub mod publish;
pub mod service;
pub mod upstream;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use prost::Message as _;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};
use urpnet_proto::archive::{self as rules, Refusal};
use urpnet_proto::db::Backend;
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::territory::{Level as TerritoryCodeLevel, Territory};
use urpnet_proto::v1::{
    ArchiveBatch, ArchiveCell, ArchiveFilter, ArchiveQueryRequest, ArchiveQueryResponse,
    ArchiveRecord, ArchiveSource, ArchiveStatsResponse, ArchiveTrendsRequest,
    ArchiveTrendsResponse, Channel, Dimension, HandlingTime, Member, Outcome, PayloadKind,
    PushArchiveResponse, RefusedRecord, Signed, TerritoryLevel, TrendRow,
};
use urpnet_proto::validate::Violations;

use crate::error::{RegistryError, RegistryResult};
use publish::{Hidden, perturb, perturb_total, poisson_upper_tail, protect, record_key};

/// Largest signed batch accepted, in bytes.
pub const BATCH_MAX_BYTES: usize = 1024 * 1024;
/// Most cells a query returns.
pub const QUERY_MAX_CELLS: usize = 200_000;
/// Rows per multi-row INSERT: a whole batch in one statement (16 binds a
/// row, 32,000 in all; SQLite allows 32,766).
const INSERT_CHUNK: usize = rules::BATCH_MAX_RECORDS;
/// Default trailing baseline, weeks.
pub const DEFAULT_BASELINE_WEEKS: u32 = 8;
/// Default smallest count for a surge.
pub const DEFAULT_MIN_COUNT: u32 = 10;
/// Default significance of the surge test.
pub const DEFAULT_ALPHA: f64 = 0.001;
/// A surge must also be this many times the baseline mean.
pub const SURGE_MIN_RATIO: f64 = 1.5;

/// Upward replication as last seen, for `archive stats`.
#[derive(Debug, Clone, Default)]
pub struct UpstreamState {
    /// The national registry's endpoint; empty when disabled.
    pub endpoint: String,
    /// Records acknowledged upstream.
    pub sent: u64,
    /// Records waiting.
    pub pending: u64,
    /// The last error; empty after a success.
    pub error: String,
}

/// The archive: its tables in the registry's database.
#[derive(Debug)]
pub struct Archive {
    pool: AnyPool,
    backend: Backend,
    /// On PostgreSQL, ingest binds whole columns as arrays (`UNNEST`): one
    /// parameter per column instead of one per value, which the `Any`
    /// driver cannot do.
    pg: Option<sqlx::PgPool>,
    ingest: tokio::sync::Mutex<()>,
    k: u32,
    refused: Mutex<HashMap<String, u64>>,
    upstream: Mutex<UpstreamState>,
}

fn internal(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Internal(e.to_string())
}

impl Archive {
    /// The archive in `pool` (already migrated), publishing with `k`.
    pub fn new(pool: AnyPool, backend: Backend, url: &str, k: u32) -> Self {
        let pg = (backend == Backend::Postgres)
            .then(|| {
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect_lazy(url)
                    .ok()
            })
            .flatten();
        Self {
            pool,
            backend,
            pg,
            ingest: tokio::sync::Mutex::new(()),
            k,
            refused: Mutex::new(HashMap::new()),
            upstream: Mutex::new(UpstreamState::default()),
        }
    }

    /// Closes the PostgreSQL ingest pool, if any (the shared pool is closed
    /// by its owner).
    pub async fn close(&self) {
        if let Some(pg) = &self.pg {
            pg.close().await;
        }
    }

    /// The configured k.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// The database pool (upward replication reads from it).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn set_upstream(&self, state: UpstreamState) {
        *self.upstream.lock().expect("upstream lock") = state;
    }

    fn count_refused(&self, member: &str, reason: &'static str, n: u64) {
        metrics::counter!("urpnet_archive_refused_total", "reason" => reason).increment(n);
        *self
            .refused
            .lock()
            .expect("refused lock")
            .entry(member.to_owned())
            .or_default() += n;
    }

    /// Checks a signed batch from `sender` (the caller, an active member) and
    /// stores its good records.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad envelope (kind, size, signature, payload,
    /// author), `PermissionDenied` when the envelope names another author
    /// than the caller; storage failures. Bad records inside a good batch are
    /// not errors: they are listed in the response.
    pub async fn push(
        &self,
        sender: &Member,
        signed: &Signed,
    ) -> RegistryResult<PushArchiveResponse> {
        let refuse = |reason: &'static str, err: RegistryError| {
            self.count_refused(&sender.id, reason, 1);
            tracing::warn!(member = %sender.id, reason, error = %err, "archive batch refused");
            Err(err)
        };
        if signed.author != sender.id {
            return refuse(
                "wrong_author",
                RegistryError::PermissionDenied(format!(
                    "the certificate identifies `{}`; it cannot push a batch signed as `{}`",
                    sender.id, signed.author
                )),
            );
        }
        if signed.payload.len() > BATCH_MAX_BYTES {
            return refuse(
                "too_large",
                RegistryError::invalid("batch.payload", format!("at most {BATCH_MAX_BYTES} bytes")),
            );
        }
        let key = <[u8; 32]>::try_from(sender.signing_key.as_slice())
            .ok()
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
            .ok_or_else(|| internal(format!("member {} has no valid signing key", sender.id)))?;
        match urpnet_proto::signing::verify(signed, PayloadKind::ArchiveBatch, &key) {
            Ok(()) => {}
            Err(urpnet_proto::signing::SigningError::WrongKind { .. }) => {
                return refuse(
                    "wrong_kind",
                    RegistryError::invalid("batch.kind", "must be PAYLOAD_KIND_ARCHIVE_BATCH"),
                );
            }
            Err(_) => {
                return refuse(
                    "bad_signature",
                    RegistryError::invalid(
                        "batch.signature",
                        format!("does not verify with the signing key of `{}`", sender.id),
                    ),
                );
            }
        }
        let batch = match ArchiveBatch::decode(signed.payload.as_slice()) {
            Ok(b) => b,
            Err(e) => {
                return refuse(
                    "undecodable",
                    RegistryError::invalid("batch.payload", format!("not an ArchiveBatch: {e}")),
                );
            }
        };
        if batch.author != sender.id {
            return refuse(
                "wrong_author",
                RegistryError::invalid("batch.author", "must equal the envelope's author"),
            );
        }
        if batch.records.is_empty() || batch.records.len() > rules::BATCH_MAX_RECORDS {
            return refuse(
                "invalid",
                RegistryError::invalid(
                    "batch.records",
                    format!("must hold 1..={} records", rules::BATCH_MAX_RECORDS),
                ),
            );
        }
        let regions = rules::regions_of_member(&sender.territory);
        let now_week = rules::week_of_ms(system_time_ms());
        let mut good = Vec::with_capacity(batch.records.len());
        let mut refused = Vec::new();
        for (index, bytes) in batch.records.iter().enumerate() {
            match rules::check_record(bytes, regions.as_ref(), now_week) {
                Ok(record) => good.push(record),
                Err(Refusal { reason, detail }) => {
                    self.count_refused(&sender.id, reason, 1);
                    refused.push(RefusedRecord {
                        index: index as u32,
                        reason: reason.to_owned(),
                        detail,
                    });
                }
            }
        }
        if !refused.is_empty() {
            tracing::warn!(
                member = %sender.id,
                refused = refused.len(),
                first = %refused[0].detail,
                "archive records refused"
            );
        }
        let (accepted, duplicates) = self.store(&sender.id, &good).await?;
        metrics::counter!("urpnet_archive_records_total", "result" => "accepted")
            .increment(accepted);
        metrics::counter!("urpnet_archive_records_total", "result" => "duplicate")
            .increment(duplicates);
        tracing::debug!(member = %sender.id, accepted, duplicates, "archive batch stored");
        Ok(PushArchiveResponse {
            accepted: accepted as u32,
            duplicates: duplicates as u32,
            refused,
        })
    }

    /// Stores checked records from `source` in one transaction; returns
    /// (stored now, held already).
    ///
    /// # Errors
    /// Storage failures (nothing is stored then).
    pub async fn store(
        &self,
        source: &str,
        records: &[ArchiveRecord],
    ) -> RegistryResult<(u64, u64)> {
        if records.is_empty() {
            return Ok((0, 0));
        }
        let italy = Territory::italy();
        let _serial = self.ingest.lock().await;
        let now = system_time_ms() as i64;
        if let Some(pg) = &self.pg {
            return store_pg(pg, source, records, now).await;
        }
        let mut tx = self.pool.begin().await?;
        let mut inserted: BTreeSet<Vec<u8>> = BTreeSet::new();
        for chunk in records.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO archive_records (id, source, category, channel, territory, province, \
                 region, week, outcome, handling, handoffs, overflow, origin_level, \
                 competent_level, received_ms, rkey) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                self.values(chunk.len(), 16)
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                let (province, region) = place(italy, &r.territory);
                q = q
                    .bind(r.id.clone())
                    .bind(source.to_owned())
                    .bind(r.category.clone())
                    .bind(i64::from(r.channel))
                    .bind(r.territory.clone())
                    .bind(province)
                    .bind(region)
                    .bind(i64::from(r.week))
                    .bind(i64::from(r.outcome))
                    .bind(i64::from(r.handling))
                    .bind(i64::from(r.handoffs))
                    .bind(i64::from(r.overflow))
                    .bind(i64::from(r.origin_level))
                    .bind(i64::from(r.competent_level))
                    .bind(now)
                    .bind(record_key(&r.id));
            }
            for row in q.fetch_all(&mut *tx).await? {
                inserted.insert(row.try_get::<Vec<u8>, _>(0)?);
            }
        }
        let (rollup, accepted) = new_cells(records, &inserted);
        for chunk in rollup.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO archive_weekly (week, category, territory, province, region, n, key_sum) \
                 VALUES {} ON CONFLICT (week, category, territory) DO UPDATE SET \
                 n = archive_weekly.n + excluded.n, key_sum = archive_weekly.key_sum + excluded.key_sum",
                self.values(chunk.len(), 7)
            );
            let mut q = sqlx::query(&sql);
            for ((week, category, territory), (n, key)) in chunk {
                let (province, region) = place(italy, territory);
                q = q
                    .bind(i64::from(*week))
                    .bind((*category).to_owned())
                    .bind((*territory).to_owned())
                    .bind(province)
                    .bind(region)
                    .bind(*n)
                    .bind(*key);
            }
            q.execute(&mut *tx).await?;
        }
        let provinces = by_province(italy, &rollup);
        for chunk in provinces.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO archive_weekly_province (week, category, region, province, n, key_sum) \
                 VALUES {} ON CONFLICT (week, category, region, province) DO UPDATE SET \
                 n = archive_weekly_province.n + excluded.n, \
                 key_sum = archive_weekly_province.key_sum + excluded.key_sum",
                self.values(chunk.len(), 6)
            );
            let mut q = sqlx::query(&sql);
            for ((week, category, region, province), (n, key)) in chunk {
                q = q
                    .bind(i64::from(*week))
                    .bind((*category).to_owned())
                    .bind(region.clone())
                    .bind(province.clone())
                    .bind(*n)
                    .bind(*key);
            }
            q.execute(&mut *tx).await?;
        }
        sqlx::query(SOURCE_TALLY)
            .bind(source.to_owned())
            .bind(accepted as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((accepted, records.len() as u64 - accepted))
    }

    /// `(..), (..)` for `rows` rows of `width` placeholders: `?` on SQLite
    /// (its numbered `$N` parameters are looked up by name, which makes
    /// statements of thousands of them many times slower), `$N` on
    /// PostgreSQL.
    fn values(&self, rows: usize, width: usize) -> String {
        let mut sql = String::with_capacity(rows * width * 6);
        for r in 0..rows {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                match self.backend {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => sql.push_str(&format!("${}", r * width + c + 1)),
                }
            }
            sql.push(')');
        }
        sql
    }

    /// What the archive holds.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn stats(&self) -> RegistryResult<ArchiveStatsResponse> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT), CAST(COALESCE(MIN(week), 0) AS BIGINT), \
             CAST(COALESCE(MAX(week), 0) AS BIGINT) FROM archive_weekly_province",
        )
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT member, CAST(records AS BIGINT), CAST(last_received_ms AS BIGINT) \
             FROM archive_sources ORDER BY member",
        )
        .fetch_all(&self.pool)
        .await?;
        let refused = self.refused.lock().expect("refused lock").clone();
        let mut sources: Vec<ArchiveSource> = rows
            .iter()
            .map(|r| {
                let member: String = r.try_get(0)?;
                Ok(ArchiveSource {
                    refused: refused.get(&member).copied().unwrap_or(0),
                    member,
                    records: r.try_get::<i64, _>(1)? as u64,
                    last_received_ms: r.try_get::<i64, _>(2)? as u64,
                })
            })
            .collect::<RegistryResult<_>>()?;
        for (member, n) in refused {
            if !sources.iter().any(|s| s.member == member) {
                sources.push(ArchiveSource {
                    member,
                    records: 0,
                    last_received_ms: 0,
                    refused: n,
                });
            }
        }
        sources.sort_by(|a, b| a.member.cmp(&b.member));
        let up = self.upstream.lock().expect("upstream lock").clone();
        Ok(ArchiveStatsResponse {
            records: row.try_get::<i64, _>(0)? as u64,
            first_week: row.try_get::<i64, _>(1)? as u32,
            last_week: row.try_get::<i64, _>(2)? as u32,
            sources,
            upstream: up.endpoint,
            upstream_sent: up.sent,
            upstream_pending: up.pending,
            upstream_error: up.error,
            k: self.k,
        })
    }

    fn k_of(&self, requested: u32) -> RegistryResult<u64> {
        if requested == 0 {
            return Ok(u64::from(self.k));
        }
        if requested < self.k {
            return Err(RegistryError::invalid(
                "k",
                format!("must be at least the registry's k ({})", self.k),
            ));
        }
        Ok(u64::from(requested))
    }

    /// Counts grouped by the requested dimensions, protected.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field; storage failures.
    pub async fn query(&self, req: &ArchiveQueryRequest) -> RegistryResult<ArchiveQueryResponse> {
        let k = self.k_of(req.k)?;
        let mut v = Violations::new();
        let dims: Vec<Dimension> = req
            .group_by
            .iter()
            .map(|d| Dimension::try_from(*d).unwrap_or(Dimension::Unspecified))
            .collect();
        v.check(
            (1..=4).contains(&dims.len()),
            "group_by",
            "must name 1..=4 dimensions",
        );
        v.check(
            dims.iter().all(|d| *d != Dimension::Unspecified),
            "group_by",
            "must name known dimensions",
        );
        v.check(
            dims.iter().collect::<BTreeSet<_>>().len() == dims.len(),
            "group_by",
            "must not repeat a dimension",
        );
        let level = TerritoryLevel::try_from(req.level);
        v.check(
            level.is_ok(),
            "level",
            "must be comune, provincia or regione",
        );
        let filter = req.filter.clone().unwrap_or_default();
        check_filter(&mut v, "filter", &filter);
        v.into_result()?;
        let level = level.unwrap_or(TerritoryLevel::Comune);
        let rollup = dims.iter().all(|d| {
            matches!(
                d,
                Dimension::Category | Dimension::Territory | Dimension::Week
            )
        }) && filter.channel == 0
            && filter.outcome == 0;
        let columns: Vec<&str> = dims.iter().map(|d| column(*d, level)).collect();
        let (table, count) = if rollup && by_province_ok(level, &filter) {
            (
                "archive_weekly_province",
                "CAST(SUM(n) AS BIGINT), CAST(SUM(key_sum) AS BIGINT)",
            )
        } else if rollup {
            (
                "archive_weekly",
                "CAST(SUM(n) AS BIGINT), CAST(SUM(key_sum) AS BIGINT)",
            )
        } else {
            (
                "archive_records",
                "CAST(COUNT(*) AS BIGINT), CAST(SUM(rkey) AS BIGINT)",
            )
        };
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                if matches!(*c, "category" | "territory" | "province" | "region") {
                    (*c).to_owned()
                } else {
                    format!("CAST({c} AS BIGINT)")
                }
            })
            .collect();
        let (clause, binds) = where_clause(&filter);
        let sql = format!(
            "SELECT {}, {count} FROM {table}{clause} GROUP BY {} ORDER BY {} LIMIT {}",
            select.join(", "),
            columns.join(", "),
            columns.join(", "),
            QUERY_MAX_CELLS + 1
        );
        let rows = bind_all(sqlx::query(&sql), &binds)
            .fetch_all(&self.pool)
            .await?;
        if rows.len() > QUERY_MAX_CELLS {
            return Err(RegistryError::invalid(
                "group_by",
                format!("the result has more than {QUERY_MAX_CELLS} cells; narrow the filter"),
            ));
        }
        let mut raw = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut keys = Vec::with_capacity(dims.len());
            for (i, d) in dims.iter().enumerate() {
                keys.push(key_text(*d, row, i)?);
            }
            let n: i64 = row.try_get(dims.len())?;
            let key: i64 = row.try_get(dims.len() + 1)?;
            raw.push((keys, n as u64, key));
        }
        let total: u64 = raw.iter().map(|(_, n, _)| n).sum();
        let total_key: i64 = raw.iter().map(|(_, _, key)| key).sum();
        let outcome_dim = dims.iter().position(|d| *d == Dimension::Outcome);
        let cells = protect(raw, dims.len(), k, outcome_dim);
        let count_of = |h: Hidden| cells.iter().filter(|c| c.hidden == h).count() as u32;
        let generalised = outcome_dim.map_or(0, |d| {
            cells
                .iter()
                .filter(|c| c.keys[d] == publish::ANY_OUTCOME)
                .count() as u32
        });
        Ok(ArchiveQueryResponse {
            columns: dims.iter().map(|d| dimension_name(*d).to_owned()).collect(),
            suppressed_small: count_of(Hidden::Small),
            suppressed_complementary: count_of(Hidden::Complementary),
            generalised_l_diversity: generalised,
            cells: cells
                .into_iter()
                .map(|c| ArchiveCell {
                    count: if matches!(c.hidden, Hidden::No | Hidden::LDiversity) {
                        perturb(c.count, c.key, k)
                    } else {
                        0
                    },
                    suppressed: if c.hidden == Hidden::LDiversity {
                        String::new()
                    } else {
                        c.hidden.word().to_owned()
                    },
                    keys: c.keys,
                })
                .collect(),
            total: if total >= k {
                perturb(total, total_key, k)
            } else {
                0
            },
            k: k as u32,
        })
    }

    /// The latest week holding records, if any.
    async fn latest_week(&self) -> RegistryResult<Option<u32>> {
        let w: Option<i64> =
            sqlx::query("SELECT CAST(MAX(week) AS BIGINT) FROM archive_weekly_province")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok(w.map(|w| w as u32))
    }

    /// This week against a trailing baseline per category x territory.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field; storage failures.
    pub async fn trends(
        &self,
        req: &ArchiveTrendsRequest,
    ) -> RegistryResult<ArchiveTrendsResponse> {
        let k = u64::from(self.k);
        let mut v = Violations::new();
        let baseline = if req.baseline_weeks == 0 {
            DEFAULT_BASELINE_WEEKS
        } else {
            req.baseline_weeks
        };
        v.check(
            (1..=52).contains(&baseline),
            "baseline_weeks",
            "must be 1..=52",
        );
        v.check(
            req.week == 0 || rules::monday_of(req.week).is_some(),
            "week",
            "must be an ISO week YYYYWW",
        );
        let level = TerritoryLevel::try_from(req.level);
        v.check(
            level.is_ok(),
            "level",
            "must be comune, provincia or regione",
        );
        v.check(
            req.alpha == 0.0 || (req.alpha > 0.0 && req.alpha < 0.5),
            "alpha",
            "must be in (0, 0.5)",
        );
        let filter = ArchiveFilter {
            category: req.category.clone(),
            territory: req.territory.clone(),
            ..Default::default()
        };
        check_filter(&mut v, "", &filter);
        v.into_result()?;
        let level = level.unwrap_or(TerritoryLevel::Comune);
        let min_count = u64::from(if req.min_count == 0 {
            DEFAULT_MIN_COUNT
        } else {
            req.min_count
        })
        .max(k);
        let alpha = if req.alpha == 0.0 {
            DEFAULT_ALPHA
        } else {
            req.alpha
        };
        let method = format!(
            "surge: count >= {min_count}, >= {SURGE_MIN_RATIO}x the {baseline}-week mean, and \
             P(X >= count) < {alpha} for X ~ Poisson(max(mean, 0.5)); counts under k = {k} hidden"
        );
        let week = match req.week {
            0 => match self.latest_week().await? {
                Some(w) => w,
                None => {
                    return Ok(ArchiveTrendsResponse {
                        week: 0,
                        baseline_weeks: baseline,
                        rows: Vec::new(),
                        k: k as u32,
                        method,
                    });
                }
            },
            w => w,
        };
        let first = rules::add_weeks(week, -i64::from(baseline))
            .ok_or_else(|| RegistryError::invalid("week", "too early for the baseline"))?;
        let weeks: Vec<u32> = (0..=i64::from(baseline))
            .filter_map(|i| rules::add_weeks(first, i))
            .collect();
        let filter = ArchiveFilter {
            week_from: first,
            week_to: week,
            ..filter
        };
        let place_col = column(Dimension::Territory, level);
        let (clause, binds) = where_clause(&filter);
        let table = if by_province_ok(level, &filter) {
            "archive_weekly_province"
        } else {
            "archive_weekly"
        };
        let sql = format!(
            "SELECT category, {place_col}, CAST(week AS BIGINT), CAST(SUM(n) AS BIGINT), \
             CAST(SUM(key_sum) AS BIGINT) FROM {table}{clause} GROUP BY category, {place_col}, week"
        );
        let rows = bind_all(sqlx::query(&sql), &binds)
            .fetch_all(&self.pool)
            .await?;
        // Each week's count and key sum.
        type Series = (Vec<u64>, Vec<i64>);
        let mut series: BTreeMap<(String, String), Series> = BTreeMap::new();
        for row in &rows {
            let w = row.try_get::<i64, _>(2)? as u32;
            let Some(i) = weeks.iter().position(|x| *x == w) else {
                continue;
            };
            let (counts, keys) = series
                .entry((row.try_get(0)?, row.try_get(1)?))
                .or_insert_with(|| (vec![0; weeks.len()], vec![0; weeks.len()]));
            counts[i] = row.try_get::<i64, _>(3)? as u64;
            keys[i] = row.try_get::<i64, _>(4)?;
        }
        let mut out = Vec::new();
        for ((category, territory), (counts, keys)) in series {
            // Every figure below is the published one: this week's count
            // and the baseline's total perturbed by their cell keys, so the
            // test, the ratio and the p-value give no exact count away.
            let last = counts.len() - 1;
            let suppressed = counts[last] < k;
            let count = if suppressed {
                counts[last]
            } else {
                perturb(counts[last], keys[last], k)
            };
            let base_total = perturb_total(
                counts[..last].iter().sum::<u64>(),
                keys[..last].iter().sum::<i64>(),
            );
            let mean = base_total as f64 / f64::from(baseline);
            let lambda = mean.max(0.5);
            let p = poisson_upper_tail(count, lambda);
            let ratio = if mean > 0.0 { count as f64 / mean } else { 0.0 };
            let surge = !suppressed
                && count >= min_count
                && p < alpha
                && (mean == 0.0 || ratio >= SURGE_MIN_RATIO);
            if !surge && !req.all {
                continue;
            }
            let name = territory_name(&territory);
            let explanation = if suppressed {
                format!("{category} in {name} ({territory}): under {k} this week (hidden)")
            } else if mean == 0.0 {
                format!(
                    "{category} in {name} ({territory}): {count} this week, none in the previous {baseline} weeks (p = {p:.1e})"
                )
            } else {
                format!(
                    "{category} in {name} ({territory}): {count} this week, {ratio:.1}x the {baseline}-week mean of {mean:.1} (p = {p:.1e})"
                )
            };
            let (mut weekly, hidden_weeks) = hide_small_weeks(&counts, &weeks, k);
            for (shown, key) in weekly.iter_mut().zip(&keys) {
                if *shown > 0 {
                    *shown = perturb(*shown, *key, k);
                }
            }
            out.push(TrendRow {
                category,
                territory,
                territory_name: name,
                count: if suppressed { 0 } else { count },
                suppressed,
                baseline_mean: mean,
                ratio: if suppressed { 0.0 } else { ratio },
                p_value: if suppressed { 1.0 } else { p },
                surge,
                explanation,
                weekly,
                weeks: weeks.clone(),
                hidden_weeks,
            });
        }
        out.sort_by(|a, b| {
            b.surge
                .cmp(&a.surge)
                .then(b.ratio.total_cmp(&a.ratio))
                .then(b.count.cmp(&a.count))
                .then(a.category.cmp(&b.category))
                .then(a.territory.cmp(&b.territory))
        });
        metrics::counter!("urpnet_archive_surges_total")
            .increment(out.iter().filter(|r| r.surge).count() as u64);
        Ok(ArchiveTrendsResponse {
            week,
            baseline_weeks: baseline,
            rows: out,
            k: k as u32,
            method,
        })
    }
}

/// [`Archive::store`] on PostgreSQL: the same three statements, each with
/// one array parameter per column.
async fn store_pg(
    pg: &sqlx::PgPool,
    source: &str,
    records: &[ArchiveRecord],
    now: i64,
) -> RegistryResult<(u64, u64)> {
    let italy = Territory::italy();
    let n = records.len();
    let (mut ids, mut categories, mut territories, mut provinces, mut regions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut channels, mut weeks, mut outcomes, mut handlings) = (
        Vec::<i16>::with_capacity(n),
        Vec::<i32>::with_capacity(n),
        Vec::<i16>::with_capacity(n),
        Vec::<i16>::with_capacity(n),
    );
    let (mut handoffs, mut overflows, mut origins, mut competents) = (
        Vec::<i16>::with_capacity(n),
        Vec::<i16>::with_capacity(n),
        Vec::<i16>::with_capacity(n),
        Vec::<i16>::with_capacity(n),
    );
    let mut rkeys = Vec::<i16>::with_capacity(n);
    for r in records {
        let (province, region) = place(italy, &r.territory);
        ids.push(r.id.clone());
        categories.push(r.category.clone());
        territories.push(r.territory.clone());
        provinces.push(province);
        regions.push(region);
        channels.push(r.channel as i16);
        weeks.push(r.week as i32);
        outcomes.push(r.outcome as i16);
        handlings.push(r.handling as i16);
        handoffs.push(r.handoffs as i16);
        overflows.push(i16::from(r.overflow));
        origins.push(r.origin_level as i16);
        competents.push(r.competent_level as i16);
        rkeys.push(record_key(&r.id) as i16);
    }
    let mut tx = pg.begin().await?;
    let inserted: Vec<Vec<u8>> = sqlx::query_scalar(
        "INSERT INTO archive_records (id, source, category, channel, territory, province, region, \
         week, outcome, handling, handoffs, overflow, origin_level, competent_level, received_ms, \
         rkey) \
         SELECT u.id, $2, u.category, u.channel, u.territory, u.province, u.region, u.week, \
         u.outcome, u.handling, u.handoffs, u.overflow, u.origin_level, u.competent_level, $3, \
         u.rkey \
         FROM UNNEST($1::bytea[], $4::text[], $5::int2[], $6::text[], $7::text[], $8::text[], \
         $9::int4[], $10::int2[], $11::int2[], $12::int2[], $13::int2[], $14::int2[], $15::int2[], \
         $16::int2[]) \
         AS u(id, category, channel, territory, province, region, week, outcome, handling, \
         handoffs, overflow, origin_level, competent_level, rkey) \
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(source)
    .bind(now)
    .bind(&categories)
    .bind(&channels)
    .bind(&territories)
    .bind(&provinces)
    .bind(&regions)
    .bind(&weeks)
    .bind(&outcomes)
    .bind(&handlings)
    .bind(&handoffs)
    .bind(&overflows)
    .bind(&origins)
    .bind(&competents)
    .bind(&rkeys)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: BTreeSet<Vec<u8>> = inserted.into_iter().collect();
    let (rollup, accepted) = new_cells(records, &inserted);
    let provinces = by_province(italy, &rollup);
    let (mut w, mut c, mut t, mut p, mut g, mut k, mut s) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for &((week, category, territory), (count, key)) in &rollup {
        let (province, region) = place(italy, territory);
        w.push(week as i32);
        c.push(category.to_owned());
        t.push(territory.to_owned());
        p.push(province);
        g.push(region);
        k.push(count);
        s.push(key);
    }
    sqlx::query(
        "INSERT INTO archive_weekly (week, category, territory, province, region, n, key_sum) \
         SELECT * FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], \
         $7::int8[]) \
         ON CONFLICT (week, category, territory) DO UPDATE SET n = archive_weekly.n + excluded.n, \
         key_sum = archive_weekly.key_sum + excluded.key_sum",
    )
    .bind(&w)
    .bind(&c)
    .bind(&t)
    .bind(&p)
    .bind(&g)
    .bind(&k)
    .bind(&s)
    .execute(&mut *tx)
    .await?;
    let (mut w, mut c, mut g, mut p, mut k, mut s) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for ((week, category, region, province), (count, key)) in provinces {
        w.push(week as i32);
        c.push(category.to_owned());
        g.push(region);
        p.push(province);
        k.push(count);
        s.push(key);
    }
    sqlx::query(
        "INSERT INTO archive_weekly_province (week, category, region, province, n, key_sum) \
         SELECT * FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[]) \
         ON CONFLICT (week, category, region, province) DO UPDATE SET \
         n = archive_weekly_province.n + excluded.n, \
         key_sum = archive_weekly_province.key_sum + excluded.key_sum",
    )
    .bind(&w)
    .bind(&c)
    .bind(&g)
    .bind(&p)
    .bind(&k)
    .bind(&s)
    .execute(&mut *tx)
    .await?;
    sqlx::query(SOURCE_TALLY)
        .bind(source)
        .bind(accepted as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((accepted, records.len() as u64 - accepted))
}

/// Adds a batch's new records to the sender's tally.
const SOURCE_TALLY: &str = "INSERT INTO archive_sources (member, records, last_received_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (member) DO UPDATE SET \
     records = archive_sources.records + excluded.records, last_received_ms = excluded.last_received_ms";

/// A comune rollup cell: (week, category, territory).
type WeeklyCell<'a> = (u32, &'a str, &'a str);

/// A rollup increment: records, and the sum of their keys
/// ([`publish::record_key`]).
type Tally = (i64, i64);

/// The comune rollup increments of the records the insert reported new
/// (each id once), and how many records were new.
fn new_cells<'a>(
    records: &'a [ArchiveRecord],
    inserted: &BTreeSet<Vec<u8>>,
) -> (Vec<(WeeklyCell<'a>, Tally)>, u64) {
    let mut rollup: BTreeMap<WeeklyCell<'a>, Tally> = BTreeMap::new();
    let mut seen: BTreeSet<&[u8]> = BTreeSet::new();
    for r in records {
        if inserted.contains(&r.id) && seen.insert(&r.id) {
            let cell = rollup
                .entry((r.week, r.category.as_str(), r.territory.as_str()))
                .or_default();
            cell.0 += 1;
            cell.1 += record_key(&r.id);
        }
    }
    (rollup.into_iter().collect(), seen.len() as u64)
}

/// A province rollup cell: (week, category, region, province).
type ProvinceCell<'a> = (u32, &'a str, String, String);

/// The comune-level rollup increments summed by (week, category, region,
/// province).
fn by_province<'a>(
    italy: &Territory,
    rollup: &[((u32, &'a str, &str), Tally)],
) -> Vec<(ProvinceCell<'a>, Tally)> {
    let mut out: BTreeMap<ProvinceCell<'a>, Tally> = BTreeMap::new();
    for &((week, category, territory), (n, key)) in rollup {
        let (province, region) = place(italy, territory);
        let cell = out.entry((week, category, region, province)).or_default();
        cell.0 += n;
        cell.1 += key;
    }
    out.into_iter().collect()
}

/// Hides weekly counts under k in a series whose baseline mean is published:
/// the hidden baseline weeks are protected like a line of a table (none, or
/// at least two summing to k or more), so the mean cannot give one away.
fn hide_small_weeks(counts: &[u64], weeks: &[u32], k: u64) -> (Vec<u64>, Vec<u32>) {
    let n = counts.len();
    let baseline: Vec<(Vec<String>, u64, i64)> = counts[..n - 1]
        .iter()
        .enumerate()
        .map(|(i, c)| (vec![format!("{i:03}")], *c, 0))
        .collect();
    let protected = protect(baseline, 1, k, None);
    let mut weekly = counts.to_vec();
    let mut hidden = Vec::new();
    for cell in protected.iter().filter(|c| c.hidden != Hidden::No) {
        let i: usize = cell.keys[0].parse().expect("own key");
        weekly[i] = 0;
        hidden.push(weeks[i]);
    }
    if counts[n - 1] > 0 && counts[n - 1] < k {
        weekly[n - 1] = 0;
        hidden.push(weeks[n - 1]);
    }
    (weekly, hidden)
}

/// Whether the province rollup answers a query at `level` with `filter`
/// (only category, week and a province or region territory).
fn by_province_ok(level: TerritoryLevel, filter: &ArchiveFilter) -> bool {
    level != TerritoryLevel::Comune
        && filter.channel == 0
        && filter.outcome == 0
        && (filter.territory.is_empty()
            || Territory::italy().level_of(&filter.territory) != Some(TerritoryCodeLevel::Comune))
}

/// Province and region of a record territory ("" province for a region).
fn place(italy: &Territory, territory: &str) -> (String, String) {
    let comune = territory.split('/').next().unwrap_or(territory);
    match italy.comune(comune) {
        Some(c) => (c.province_code.clone(), c.region_code.clone()),
        None => (String::new(), territory.to_owned()),
    }
}

/// A territory's name for people.
pub fn territory_name(code: &str) -> String {
    let italy = Territory::italy();
    let (comune, district) = match code.split_once('/') {
        Some((c, d)) => (c, Some(d)),
        None => (code, None),
    };
    let name = match italy.level_of(comune) {
        Some(TerritoryCodeLevel::Comune) => italy.comune(comune).map(|c| c.name.clone()),
        Some(TerritoryCodeLevel::Provincia) => italy
            .comuni()
            .find(|c| c.province_code == comune)
            .map(|c| c.province_name.clone()),
        Some(TerritoryCodeLevel::Regione) => italy
            .comuni()
            .find(|c| c.region_code == comune)
            .map(|c| c.region_name.clone()),
        None => None,
    }
    .unwrap_or_else(|| code.to_owned());
    match district {
        Some(d) => format!("{name} {d}"),
        None => name,
    }
}

fn check_filter(v: &mut Violations, prefix: &str, f: &ArchiveFilter) {
    let field = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    if !f.category.is_empty() {
        v.check(
            rules::category_ok(&f.category),
            field("category"),
            "must be a category code like rifiuti.ingombranti",
        );
    }
    if !f.territory.is_empty() {
        v.check(
            Territory::italy().level_of(&f.territory).is_some(),
            field("territory"),
            "must be an ISTAT code of a comune (6 digits), province (3) or region (2)",
        );
    }
    for (name, week) in [("week_from", f.week_from), ("week_to", f.week_to)] {
        v.check(
            week == 0 || rules::monday_of(week).is_some(),
            field(name),
            "must be an ISO week YYYYWW",
        );
    }
    if f.week_from != 0 && f.week_to != 0 {
        v.check(
            f.week_from <= f.week_to,
            field("week_to"),
            "must not be before week_from",
        );
    }
    v.check(
        Channel::try_from(f.channel).is_ok(),
        field("channel"),
        "must be a known channel",
    );
    v.check(
        Outcome::try_from(f.outcome).is_ok(),
        field("outcome"),
        "must be a known outcome",
    );
}

/// A bound value of a WHERE clause.
enum Bind {
    Text(String),
    Int(i64),
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &[Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q
}

/// The WHERE clause of a filter, with `$N` placeholders from 1 (channel and
/// outcome filters only on the raw table: callers pick a rollup without
/// them).
fn where_clause(f: &ArchiveFilter) -> (String, Vec<Bind>) {
    let mut parts = Vec::new();
    let mut binds = Vec::new();
    let next = |b: Bind, binds: &mut Vec<Bind>| {
        binds.push(b);
        format!("${}", binds.len())
    };
    if !f.category.is_empty() {
        // The category or anything under it: `x` or `x.` <= c < `x/`
        // ('/' follows '.'), which an index can use.
        let a = next(Bind::Text(f.category.clone()), &mut binds);
        let b = next(Bind::Text(format!("{}.", f.category)), &mut binds);
        let c = next(Bind::Text(format!("{}/", f.category)), &mut binds);
        parts.push(format!(
            "(category = {a} OR (category >= {b} AND category < {c}))"
        ));
    }
    if !f.territory.is_empty() {
        match Territory::italy().level_of(&f.territory) {
            Some(TerritoryCodeLevel::Comune) => {
                let a = next(Bind::Text(f.territory.clone()), &mut binds);
                let b = next(Bind::Text(format!("{}/", f.territory)), &mut binds);
                let c = next(Bind::Text(format!("{}0", f.territory)), &mut binds);
                parts.push(format!(
                    "(territory = {a} OR (territory >= {b} AND territory < {c}))"
                ));
            }
            Some(TerritoryCodeLevel::Provincia) => {
                let a = next(Bind::Text(f.territory.clone()), &mut binds);
                parts.push(format!("province = {a}"));
            }
            _ => {
                let a = next(Bind::Text(f.territory.clone()), &mut binds);
                parts.push(format!("region = {a}"));
            }
        }
    }
    if f.week_from != 0 {
        let a = next(Bind::Int(i64::from(f.week_from)), &mut binds);
        parts.push(format!("week >= {a}"));
    }
    if f.week_to != 0 {
        let a = next(Bind::Int(i64::from(f.week_to)), &mut binds);
        parts.push(format!("week <= {a}"));
    }
    if f.channel != 0 {
        let a = next(Bind::Int(i64::from(f.channel)), &mut binds);
        parts.push(format!("channel = {a}"));
    }
    if f.outcome != 0 {
        let a = next(Bind::Int(i64::from(f.outcome)), &mut binds);
        parts.push(format!("outcome = {a}"));
    }
    if parts.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", parts.join(" AND ")), binds)
    }
}

fn column(d: Dimension, level: TerritoryLevel) -> &'static str {
    match d {
        Dimension::Category => "category",
        Dimension::Channel => "channel",
        Dimension::Territory => match level {
            TerritoryLevel::Comune => "territory",
            TerritoryLevel::Provincia => "province",
            TerritoryLevel::Regione => "region",
        },
        Dimension::Week => "week",
        Dimension::Outcome => "outcome",
        Dimension::Handling => "handling",
        Dimension::Overflow => "overflow",
        Dimension::Unspecified => "NULL",
    }
}

/// The column title of a dimension.
pub fn dimension_name(d: Dimension) -> &'static str {
    match d {
        Dimension::Category => "category",
        Dimension::Channel => "channel",
        Dimension::Territory => "territory",
        Dimension::Week => "week",
        Dimension::Outcome => "outcome",
        Dimension::Handling => "handling",
        Dimension::Overflow => "overflow",
        Dimension::Unspecified => "?",
    }
}

fn key_text(d: Dimension, row: &AnyRow, i: usize) -> RegistryResult<String> {
    Ok(match d {
        Dimension::Category | Dimension::Territory => row.try_get(i)?,
        _ => {
            let n: i64 = row.try_get(i)?;
            match d {
                Dimension::Channel => Channel::try_from(n as i32)
                    .map(|c| {
                        c.as_str_name()
                            .trim_start_matches("CHANNEL_")
                            .to_lowercase()
                    })
                    .unwrap_or_else(|_| n.to_string()),
                Dimension::Week => rules::week_label(n as u32),
                Dimension::Outcome => Outcome::try_from(n as i32)
                    .map(rules::outcome_name)
                    .unwrap_or("?")
                    .to_owned(),
                Dimension::Handling => HandlingTime::try_from(n as i32)
                    .map(rules::handling_name)
                    .unwrap_or("?")
                    .to_owned(),
                Dimension::Overflow => if n != 0 { "yes" } else { "no" }.to_owned(),
                _ => n.to_string(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_small_baseline_week_hides_another() {
        let weeks: Vec<u32> = (202601..=202605).collect();
        let (weekly, hidden) = hide_small_weeks(&[2, 9, 30, 40, 12], &weeks, 5);
        assert_eq!(weekly, vec![0, 0, 30, 40, 12]);
        assert_eq!(hidden, vec![202601, 202602]);
        let (weekly, hidden) = hide_small_weeks(&[20, 9, 30, 40, 3], &weeks, 5);
        assert_eq!(weekly, vec![20, 9, 30, 40, 0]);
        assert_eq!(hidden, vec![202605]);
    }

    #[test]
    fn territory_names_cover_every_level() {
        assert_eq!(territory_name("066032"), "Celano");
        assert_eq!(territory_name("13"), "Abruzzo");
        assert_eq!(territory_name("058091/M01"), "Roma M01");
    }
}
