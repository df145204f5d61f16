//! The registry's domain: enrolment and status of members, registration and
//! heartbeats, the taxonomy, certificate renewal. gRPC adapters in
//! `service.rs` call these functions; nothing here knows about tonic.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::ids::NodeId;
use urpnet_proto::taxonomy::{self, Taxonomy};
use urpnet_proto::territory::{self, Territory};
use urpnet_proto::tls::{CertRequest, FederationCa, Identity, Issued};
use urpnet_proto::v1::{self, EnrolRequest, Level, LoadReport, Member, MemberStatus};
use urpnet_proto::validate::Violations;

use crate::error::{RegistryError, RegistryResult};
use crate::membership::Membership;
use crate::store::Store;

/// Most ISTAT codes one member may serve.
pub const MAX_TERRITORY_CODES: usize = 500;
/// Most overflow categories in one load report.
pub const MAX_OVERFLOW_CATEGORIES: usize = 256;
/// Largest CSR accepted, in bytes.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Largest taxonomy file accepted, in bytes.
pub const MAX_TAXONOMY_BYTES: usize = 1024 * 1024;

/// Files in a registry's data directory.
pub mod paths {
    use std::path::{Path, PathBuf};

    use urpnet_proto::tls::TlsFiles;

    /// The CA's certificate and key.
    pub fn ca_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("ca")
    }
    /// The registry's own server certificate, key and CA.
    pub fn server_tls(data_dir: &Path) -> TlsFiles {
        TlsFiles::in_dir(&data_dir.join("tls"))
    }
    /// The local coordinator CLI's certificate, key and CA.
    pub fn coordinator_tls(data_dir: &Path) -> TlsFiles {
        TlsFiles::in_dir(&data_dir.join("coordinator"))
    }
}

/// The federation CA's files.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// CA certificate, PEM.
    pub cert: PathBuf,
    /// CA private key, PEM (0600).
    pub key: PathBuf,
}

impl CaFiles {
    /// The files under `data_dir/ca`.
    pub fn of(data_dir: &Path) -> Self {
        let dir = paths::ca_dir(data_dir);
        Self {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        }
    }

    /// Loads the CA.
    ///
    /// # Errors
    /// Missing or malformed files, with a hint to run `ca init`.
    pub fn load(&self) -> RegistryResult<FederationCa> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| {
                RegistryError::Internal(format!(
                    "{}: {e} (run `urpnet-registry ca init` first)",
                    p.display()
                ))
            })
        };
        FederationCa::from_pem(&read(&self.cert)?, &read(&self.key)?)
            .map_err(|e| RegistryError::Internal(format!("{}: {e}", self.cert.display())))
    }
}

/// The registry's state shared by every request.
#[derive(Debug)]
pub struct Registry {
    store: Store,
    membership: Membership,
    taxonomy: RwLock<Arc<Taxonomy>>,
    ca: FederationCa,
    validity: Duration,
    /// Identity URIs refused whatever certificate they present.
    revoked: RwLock<std::collections::HashSet<String>>,
    /// Serialises writes that replace the in-memory copy, so the copy never
    /// goes back to an older version.
    write_lock: tokio::sync::Mutex<()>,
    /// Host names of the registry's own certificate: never put into a
    /// member's certificate, so no member can pose as the registry.
    reserved_hosts: std::sync::RwLock<Vec<String>>,
}

impl Registry {
    /// Loads members and taxonomy from the store.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn load(
        store: Store,
        ca: FederationCa,
        heartbeat_interval: Duration,
        validity: Duration,
    ) -> RegistryResult<Self> {
        let membership = Membership::new(heartbeat_interval);
        let (members, version) = store.members().await?;
        membership.replace(members, version);
        let taxonomy = match store.taxonomy().await? {
            Some(t) => Taxonomy::new(t)
                .map_err(|e| RegistryError::Internal(format!("stored taxonomy: {e}")))?,
            None => Taxonomy::new(v1::Taxonomy::default()).expect("empty taxonomy is valid"),
        };
        let revoked = store.revoked_identities().await?.into_iter().collect();
        Ok(Self {
            revoked: RwLock::new(revoked),
            store,
            membership,
            taxonomy: RwLock::new(Arc::new(taxonomy)),
            ca,
            validity,
            write_lock: tokio::sync::Mutex::new(()),
            reserved_hosts: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Sets the host names reserved to the registry itself (its server
    /// certificate's); an endpoint on one of them is refused.
    pub fn reserve_hosts(&self, hosts: &[String]) {
        // Loopback and IP literals are shared by everything on one machine
        // (a demo, a test): those are told apart by the identity every
        // client pins (`tls::channel_to`), not by name.
        *self.reserved_hosts.write().expect("hosts lock") = hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .filter(|h| h != "localhost" && h.parse::<std::net::IpAddr>().is_err())
            .collect();
    }

    /// Refuses an endpoint on one of the registry's own host names.
    fn check_not_reserved(&self, v: &mut Violations, field: &str, endpoint: &str) {
        if let Some(host) = endpoint_host(endpoint) {
            let reserved = self.reserved_hosts.read().expect("hosts lock");
            v.check(
                !reserved.contains(&host.to_ascii_lowercase()),
                field,
                format!("host `{host}` belongs to the registry itself"),
            );
        }
    }

    /// Whether an identity's certificates are all revoked.
    pub fn is_revoked(&self, identity: &Identity) -> bool {
        self.revoked
            .read()
            .expect("revoked lock")
            .contains(&identity.uri())
    }

    /// Revokes every certificate of coordinator `name`, at once.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad name or reason, `FailedPrecondition` for
    /// a coordinator revoking itself.
    pub async fn revoke_coordinator(
        &self,
        name: &str,
        reason: &str,
        by: &Identity,
    ) -> RegistryResult<Identity> {
        let mut v = Violations::new();
        let id = NodeId::new(name)
            .map_err(|e| v.add("name", e.to_string()))
            .ok();
        v.length("reason", reason, 0, 500);
        v.printable("reason", reason);
        v.into_result()?;
        let identity = Identity::Coordinator(id.expect("checked").to_string());
        if &identity == by {
            return Err(RegistryError::FailedPrecondition(
                "a coordinator cannot revoke its own certificate; ask another coordinator".into(),
            ));
        }
        self.store
            .revoke_identity(
                &identity.uri(),
                reason.trim(),
                &by.uri(),
                system_time_ms() as i64,
            )
            .await?;
        self.revoked
            .write()
            .expect("revoked lock")
            .insert(identity.uri());
        tracing::warn!(identity = %identity, reason, by = %by, "coordinator revoked");
        Ok(identity)
    }

    /// The in-memory membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The current taxonomy.
    pub fn taxonomy(&self) -> Arc<Taxonomy> {
        self.taxonomy.read().expect("taxonomy lock").clone()
    }

    /// The federation CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Enrols a body: validates everything, signs its CSR, stores member and
    /// certificate in one transaction.
    ///
    /// # Errors
    /// `InvalidArgument` naming each bad field, `AlreadyExists` for an
    /// enrolled id (also a revoked one).
    pub async fn enrol(&self, req: EnrolRequest) -> RegistryResult<(Member, Issued)> {
        let mut v = Violations::new();
        let id = match NodeId::new(&req.id) {
            Ok(id) => Some(id),
            Err(e) => {
                v.add("id", e.to_string());
                None
            }
        };
        v.length("display_name", &req.display_name, 1, 200);
        v.printable("display_name", &req.display_name);
        let level = Level::try_from(req.level).unwrap_or(Level::Unspecified);
        if level == Level::Unspecified {
            v.add("level", "must be comune, provincia, regione or nazionale");
        }
        check_territory(&mut v, level, &req.territory);
        check_endpoint(&mut v, "endpoint", &req.endpoint);
        self.check_not_reserved(&mut v, "endpoint", &req.endpoint);
        check_signing_key(&mut v, &req.signing_key);
        if req.csr_pem.is_empty() {
            v.add(
                "csr_pem",
                "is required (the node's certificate signing request, PEM)",
            );
        } else if req.csr_pem.len() > MAX_CSR_BYTES {
            v.add("csr_pem", format!("must be at most {MAX_CSR_BYTES} bytes"));
        }
        v.into_result()?;
        let id = id.expect("checked");
        // Checked and stored under the write lock, so no certificate is ever
        // signed for an id another enrolment is taking at the same moment.
        let _guard = self.write_lock.lock().await;
        if self.membership.status(id.as_str()).is_some() {
            return Err(RegistryError::AlreadyExists(format!(
                "member `{id}` is enrolled already (a revoked id cannot be enrolled again)"
            )));
        }
        let issued = self
            .ca
            .sign_csr(
                &req.csr_pem,
                &CertRequest {
                    identity: Identity::Node(id.clone()),
                    hosts: endpoint_host(&req.endpoint).into_iter().collect(),
                    validity: self.validity,
                    not_before: None,
                },
            )
            .map_err(|e| RegistryError::invalid("csr_pem", e.to_string()))?;
        let now = system_time_ms();
        let member = Member {
            id: id.to_string(),
            display_name: req.display_name.trim().to_owned(),
            level: level as i32,
            territory: req.territory.clone(),
            endpoint: req.endpoint.clone(),
            signing_key: req.signing_key.clone(),
            status: MemberStatus::Active as i32,
            status_reason: String::new(),
            enrolled_at_ms: now,
            ..Member::default()
        };
        let version = self
            .store
            .insert_member(&member, &issued.info, now as i64)
            .await?;
        self.membership.upsert(member.clone(), version);
        tracing::info!(member = %id, serial = %issued.info.serial, "member enrolled");
        metrics::counter!("urpnet_registry_enrolments_total").increment(1);
        Ok((member, issued))
    }

    /// Suspends, reinstates or revokes a member. Revoked is final.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` for a bad status or reason,
    /// `FailedPrecondition` for a change from revoked.
    pub async fn set_status(
        &self,
        id: &str,
        status: i32,
        reason: &str,
        by: &Identity,
    ) -> RegistryResult<Member> {
        let mut v = Violations::new();
        let new = MemberStatus::try_from(status).unwrap_or(MemberStatus::Unspecified);
        if new == MemberStatus::Unspecified {
            v.add("status", "must be active, suspended or revoked");
        }
        v.length("reason", reason, 0, 500);
        v.printable("reason", reason);
        v.into_result()?;
        let _guard = self.write_lock.lock().await;
        let Some((current, _)) = self.membership.status(id) else {
            return Err(RegistryError::NotFound(format!(
                "member `{id}` is not enrolled"
            )));
        };
        if current == MemberStatus::Revoked && new != MemberStatus::Revoked {
            return Err(RegistryError::FailedPrecondition(format!(
                "member `{id}` is revoked, which is final; enrol the body under a new identity only after the coordinator's review"
            )));
        }
        let version = self
            .store
            .set_status(id, new as i32, reason.trim(), system_time_ms() as i64)
            .await?;
        let mut member = self
            .membership
            .enrolled(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        member.status = new as i32;
        member.status_reason = reason.trim().to_owned();
        self.membership.upsert(member, version);
        tracing::warn!(member = %id, status = ?new, reason, by = %by, "member status changed");
        self.membership
            .get(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }

    /// A member's confirmation of its enrolment, updating its endpoint.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad endpoint.
    pub async fn register(&self, caller: &NodeId, endpoint: &str) -> RegistryResult<Member> {
        if !endpoint.is_empty() {
            let mut v = Violations::new();
            check_endpoint(&mut v, "endpoint", endpoint);
            self.check_not_reserved(&mut v, "endpoint", endpoint);
            v.into_result()?;
            let current = self.membership.get(caller.as_str()).map(|m| m.endpoint);
            // The host goes into the member's next certificate: only the
            // coordinator chooses it (at enrolment); a member may move port.
            let old_host = current.as_deref().and_then(endpoint_host);
            if old_host.is_some() && old_host != endpoint_host(endpoint) {
                return Err(RegistryError::FailedPrecondition(format!(
                    "endpoint: moving from host `{}` to `{}` needs the coordinator's approval \
                     (a new enrolment); a member may change only its port",
                    old_host.unwrap_or_default(),
                    endpoint_host(endpoint).unwrap_or_default()
                )));
            }
            if current.as_deref() != Some(endpoint) {
                let _guard = self.write_lock.lock().await;
                let version = self
                    .store
                    .set_endpoint(caller.as_str(), endpoint, system_time_ms() as i64)
                    .await?;
                if let Some(mut member) = self.membership.enrolled(caller.as_str()) {
                    member.endpoint = endpoint.to_owned();
                    self.membership.upsert(member, version);
                }
                tracing::info!(member = %caller, endpoint, "member endpoint updated");
            }
        }
        tracing::info!(member = %caller, "member registered");
        self.membership
            .get(caller.as_str())
            .ok_or_else(|| RegistryError::NotFound(format!("member `{caller}` is not enrolled")))
    }

    /// Records a heartbeat after checking the load report.
    ///
    /// # Errors
    /// `InvalidArgument` naming bad overflow categories.
    pub fn heartbeat(&self, caller: &NodeId, load: LoadReport) -> RegistryResult<()> {
        let mut v = Violations::new();
        if load.overflow_categories.len() > MAX_OVERFLOW_CATEGORIES {
            v.add(
                "load.overflow_categories",
                format!("at most {MAX_OVERFLOW_CATEGORIES} categories"),
            );
        } else {
            let taxonomy = self.taxonomy();
            // With no taxonomy imported yet, codes cannot be checked.
            if !taxonomy.is_empty() {
                for (i, code) in load.overflow_categories.iter().enumerate() {
                    if taxonomy.get(code).is_none() {
                        v.add(
                            format!("load.overflow_categories[{i}]"),
                            format!("unknown category `{code}`"),
                        );
                    }
                }
            }
        }
        v.into_result()?;
        self.membership
            .heartbeat(caller.as_str(), load, system_time_ms())?;
        metrics::counter!("urpnet_registry_heartbeats_total").increment(1);
        Ok(())
    }

    /// Imports a taxonomy from TOML as the next version.
    ///
    /// # Errors
    /// `InvalidArgument` with the parser's or validator's one-line message;
    /// `FailedPrecondition` when the file names a version not newer than the
    /// current one.
    pub async fn import_taxonomy(
        &self,
        text: &str,
        by: &Identity,
    ) -> RegistryResult<Arc<Taxonomy>> {
        if text.len() > MAX_TAXONOMY_BYTES {
            return Err(RegistryError::invalid(
                "toml",
                format!("must be at most {MAX_TAXONOMY_BYTES} bytes"),
            ));
        }
        let mut parsed = taxonomy::parse_toml(text)
            .map_err(|e| RegistryError::invalid("toml", e.to_string()))?;
        let _guard = self.write_lock.lock().await;
        let current = self.taxonomy().version();
        if parsed.version != 0 && parsed.version <= current {
            return Err(RegistryError::FailedPrecondition(format!(
                "the file is taxonomy version {}, not newer than the registry's {current}; remove `version` or set it to {}",
                parsed.version,
                current + 1
            )));
        }
        parsed.version = current + 1;
        let indexed = Arc::new(
            Taxonomy::new(parsed.clone())
                .map_err(|e| RegistryError::invalid("toml", e.to_string()))?,
        );
        self.store
            .insert_taxonomy(&parsed, &by.uri(), system_time_ms() as i64)
            .await?;
        *self.taxonomy.write().expect("taxonomy lock") = indexed.clone();
        tracing::info!(version = parsed.version, categories = indexed.len(), by = %by, "taxonomy imported");
        Ok(indexed)
    }

    /// A new certificate for `identity` from its CSR (renewal).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad CSR.
    pub async fn renew(&self, identity: &Identity, csr_pem: &str) -> RegistryResult<Issued> {
        if csr_pem.is_empty() || csr_pem.len() > MAX_CSR_BYTES {
            return Err(RegistryError::invalid(
                "csr_pem",
                format!("is required and at most {MAX_CSR_BYTES} bytes"),
            ));
        }
        let reserved = self.reserved_hosts.read().expect("hosts lock").clone();
        let hosts = identity
            .node()
            .and_then(|id| self.membership.get(id.as_str()))
            .and_then(|m| endpoint_host(&m.endpoint))
            .filter(|h| !reserved.contains(&h.to_ascii_lowercase()))
            .into_iter()
            .collect();
        let issued = self
            .ca
            .sign_csr(
                csr_pem,
                &CertRequest {
                    identity: identity.clone(),
                    hosts,
                    validity: self.validity,
                    not_before: None,
                },
            )
            .map_err(|e| RegistryError::invalid("csr_pem", e.to_string()))?;
        self.store
            .record_certificate(&issued.info, system_time_ms() as i64)
            .await?;
        tracing::info!(identity = %identity, serial = %issued.info.serial, "certificate renewed");
        metrics::counter!("urpnet_registry_certificates_renewed_total").increment(1);
        Ok(issued)
    }
}

/// Checks that the territory codes exist and match the member's level.
pub fn check_territory(v: &mut Violations, level: Level, codes: &[String]) {
    if codes.len() > MAX_TERRITORY_CODES {
        v.add("territory", format!("at most {MAX_TERRITORY_CODES} codes"));
        return;
    }
    let (expected, name) = match level {
        Level::Comune => (territory::Level::Comune, "6-digit ISTAT code of a comune"),
        Level::Provincia => (
            territory::Level::Provincia,
            "3-digit ISTAT code of a provincia",
        ),
        Level::Regione => (territory::Level::Regione, "2-digit ISTAT code of a regione"),
        Level::Nazionale => {
            if !codes.is_empty() {
                v.add(
                    "territory",
                    "must be empty for a national body (it serves all of Italy)",
                );
            }
            return;
        }
        Level::Unspecified => return,
    };
    if codes.is_empty() {
        v.add("territory", format!("needs at least one {name}"));
    }
    for (i, code) in codes.iter().enumerate() {
        if Territory::italy().level_of(code) != Some(expected) {
            v.add(
                format!("territory[{i}]"),
                format!("`{code}` is not the {name}"),
            );
        }
    }
}

/// Checks a `https://host:port` endpoint.
pub fn check_endpoint(v: &mut Violations, field: &str, endpoint: &str) {
    let ok = endpoint.len() <= 256
        && endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|u| {
                u.scheme_str() == Some("https")
                    && u.host().is_some_and(|h| !h.is_empty())
                    && u.port_u16().is_some()
                    && u.path() == "/"
            })
            .is_some();
    if !ok {
        v.add(field, "must be https://host:port (at most 256 characters)");
    }
}

fn check_signing_key(v: &mut Violations, key: &[u8]) {
    match <[u8; 32]>::try_from(key) {
        Ok(bytes) => match ed25519_dalek::VerifyingKey::from_bytes(&bytes) {
            // A small-order ("weak") key lets its holder make one signature
            // verify for many messages: refused (docs/security.md, T4).
            Ok(key) if key.is_weak() => v.add("signing_key", "is a weak (small-order) ed25519 key"),
            Ok(_) => {}
            Err(_) => v.add("signing_key", "is not a valid ed25519 public key"),
        },
        Err(_) => v.add("signing_key", "must be an ed25519 public key of 32 bytes"),
    }
}

/// The host of an endpoint URI, for the certificate's SAN.
pub fn endpoint_host(endpoint: &str) -> Option<String> {
    let uri: http::Uri = endpoint.parse().ok()?;
    Some(
        uri.host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}
