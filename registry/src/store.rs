//! The registry's database: members, issued certificates, taxonomy versions
//! and the membership version counter. SQLite by default, PostgreSQL by URL,
//! one set of SQL for both (placeholders `$N`, integers as `BIGINT`).
//!
//! Writes are rare (enrolments, status changes, taxonomy imports) and each
//! is one transaction that also bumps the membership version, so a node that
//! sees a new version always finds the change. Heartbeats are soft state kept
//! in memory (see `membership.rs`).

use prost::Message as _;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};
use urpnet_proto::db::{self, Backend};
use urpnet_proto::tls::CertInfo;
use urpnet_proto::v1::{IssuedCertificate, Member, Taxonomy};

use crate::error::{RegistryError, RegistryResult};

/// Handle to the registry's database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

const MEMBER_COLUMNS: &str = "id, display_name, level, territory, endpoint, signing_key, status, status_reason, enrolled_at_ms";

impl Store {
    /// Opens (and migrates) the database at `url`.
    ///
    /// # Errors
    /// When the URL names no supported database, or it cannot be opened or
    /// migrated.
    pub async fn open(url: &str) -> RegistryResult<Self> {
        let backend = Backend::of_url(url).ok_or_else(|| {
            RegistryError::invalid("store.url", "must start with sqlite: or postgres:")
        })?;
        let max = if backend == Backend::Sqlite { 4 } else { 8 };
        let pool = db::open_pool(backend, url, max).await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await,
        }
        .map_err(|e| RegistryError::Internal(format!("migrating the database: {e}")))?;
        Ok(Self { pool, backend })
    }

    /// The connection pool (the archive keeps its own tables in it).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Every member, sorted by id, and the membership version.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn members(&self) -> RegistryResult<(Vec<Member>, u64)> {
        let rows = sqlx::query(&format!("SELECT {MEMBER_COLUMNS} FROM members ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        let members = rows
            .iter()
            .map(member_from_row)
            .collect::<RegistryResult<_>>()?;
        Ok((members, self.membership_version().await?))
    }

    async fn membership_version(&self) -> RegistryResult<u64> {
        let v: i64 =
            sqlx::query("SELECT value FROM registry_meta WHERE key = 'membership_version'")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok(v as u64)
    }

    /// Stores a new member and its first certificate; returns the new
    /// membership version.
    ///
    /// # Errors
    /// `AlreadyExists` if the id is enrolled (whatever its status).
    pub async fn insert_member(
        &self,
        member: &Member,
        cert: &CertInfo,
        now_ms: i64,
    ) -> RegistryResult<u64> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM members WHERE id = $1")
            .bind(&member.id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            return Err(RegistryError::AlreadyExists(format!(
                "member `{}` is enrolled already (use `members show`; a revoked id cannot be enrolled again)",
                member.id
            )));
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO members ({MEMBER_COLUMNS}, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
        ))
        .bind(&member.id)
        .bind(&member.display_name)
        .bind(i64::from(member.level))
        .bind(member.territory.join(","))
        .bind(&member.endpoint)
        .bind(member.signing_key.clone())
        .bind(i64::from(member.status))
        .bind(&member.status_reason)
        .bind(now_ms)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(unique_violation(e, &member.id));
        }
        insert_certificate(&mut tx, cert, now_ms).await?;
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Records a certificate (renewals, coordinators, the registry's own).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn record_certificate(&self, cert: &CertInfo, now_ms: i64) -> RegistryResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_certificate(&mut tx, cert, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Certificates issued for an identity URI, newest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn certificates(&self, subject: &str) -> RegistryResult<Vec<IssuedCertificate>> {
        let rows = sqlx::query(
            "SELECT serial, subject, not_before_ms, not_after_ms FROM certificates \
             WHERE subject = $1 ORDER BY issued_at_ms DESC, serial",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(IssuedCertificate {
                    serial: r.try_get(0)?,
                    subject: r.try_get(1)?,
                    not_before_ms: r.try_get::<i64, _>(2)? as u64,
                    not_after_ms: r.try_get::<i64, _>(3)? as u64,
                })
            })
            .collect()
    }

    /// Sets a member's status (and reason); returns the new membership
    /// version.
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    pub async fn set_status(
        &self,
        id: &str,
        status: i32,
        reason: &str,
        now_ms: i64,
    ) -> RegistryResult<u64> {
        self.update_member(
            "UPDATE members SET status = $2, status_reason = $3, updated_at_ms = $4 WHERE id = $1",
            id,
            |q| {
                q.bind(i64::from(status))
                    .bind(reason.to_owned())
                    .bind(now_ms)
            },
        )
        .await
    }

    /// Sets a member's endpoint; returns the new membership version.
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    pub async fn set_endpoint(&self, id: &str, endpoint: &str, now_ms: i64) -> RegistryResult<u64> {
        self.update_member(
            "UPDATE members SET endpoint = $2, updated_at_ms = $3 WHERE id = $1",
            id,
            |q| q.bind(endpoint.to_owned()).bind(now_ms),
        )
        .await
    }

    async fn update_member<'q>(
        &self,
        sql: &'q str,
        id: &'q str,
        bind: impl FnOnce(
            sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> RegistryResult<u64> {
        let mut tx = self.pool.begin().await?;
        let done = bind(sqlx::query(sql).bind(id)).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound(format!(
                "member `{id}` is not enrolled"
            )));
        }
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// The current taxonomy, if one was imported.
    ///
    /// # Errors
    /// Storage failures or an undecodable stored body.
    pub async fn taxonomy(&self) -> RegistryResult<Option<Taxonomy>> {
        let row = sqlx::query("SELECT body FROM taxonomies ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let body: Vec<u8> = r.try_get(0)?;
            Taxonomy::decode(body.as_slice())
                .map_err(|e| RegistryError::Internal(format!("stored taxonomy: {e}")))
        })
        .transpose()
    }

    /// Stores a new taxonomy version. Its version must be the next one; a
    /// concurrent import of the same version fails with `FailedPrecondition`.
    ///
    /// # Errors
    /// As above, and storage failures.
    pub async fn insert_taxonomy(
        &self,
        taxonomy: &Taxonomy,
        by: &str,
        now_ms: i64,
    ) -> RegistryResult<()> {
        let done = sqlx::query(
            "INSERT INTO taxonomies (version, body, imported_at_ms, imported_by) VALUES ($1, $2, $3, $4)",
        )
        .bind(i64::from(taxonomy.version))
        .bind(taxonomy.encode_to_vec())
        .bind(now_ms)
        .bind(by)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(RegistryError::FailedPrecondition(format!(
                "taxonomy version {} was imported concurrently; export and import again",
                taxonomy.version
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

impl Store {
    /// Identities revoked whatever certificate they present.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn revoked_identities(&self) -> RegistryResult<Vec<String>> {
        let rows = sqlx::query("SELECT identity FROM revoked_identities")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Revokes an identity (idempotent: a second revocation keeps the first
    /// reason).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn revoke_identity(
        &self,
        identity: &str,
        reason: &str,
        by: &str,
        now_ms: i64,
    ) -> RegistryResult<()> {
        sqlx::query(
            "INSERT INTO revoked_identities (identity, reason, revoked_at_ms, revoked_by) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (identity) DO NOTHING",
        )
        .bind(identity)
        .bind(reason)
        .bind(now_ms)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

async fn insert_certificate(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    cert: &CertInfo,
    now_ms: i64,
) -> RegistryResult<()> {
    sqlx::query(
        "INSERT INTO certificates (serial, subject, not_before_ms, not_after_ms, issued_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&cert.serial)
    .bind(cert.identity.uri())
    .bind(cert.not_before_ms as i64)
    .bind(cert.not_after_ms as i64)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn bump_version(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> RegistryResult<u64> {
    sqlx::query("UPDATE registry_meta SET value = value + 1 WHERE key = 'membership_version'")
        .execute(&mut **tx)
        .await?;
    let v: i64 = sqlx::query("SELECT value FROM registry_meta WHERE key = 'membership_version'")
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    Ok(v as u64)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn unique_violation(e: sqlx::Error, id: &str) -> RegistryError {
    if is_unique_violation(&e) {
        RegistryError::AlreadyExists(format!("member `{id}` is enrolled already"))
    } else {
        e.into()
    }
}

fn member_from_row(r: &AnyRow) -> RegistryResult<Member> {
    let territory: String = r.try_get(3)?;
    Ok(Member {
        id: r.try_get(0)?,
        display_name: r.try_get(1)?,
        level: r.try_get::<i64, _>(2)? as i32,
        territory: territory
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        endpoint: r.try_get(4)?,
        signing_key: r.try_get(5)?,
        status: r.try_get::<i64, _>(6)? as i32,
        status_reason: r.try_get(7)?,
        enrolled_at_ms: r.try_get::<i64, _>(8)? as u64,
        ..Member::default()
    })
}
