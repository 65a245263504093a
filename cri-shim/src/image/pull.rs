//! Pulling images from registries (the OCI distribution API, spoken by oci-client) into the
//! content store.
//!
//! A pull resolves the reference on the first endpoint that answers (the configured mirrors of
//! the reference's registry in order, then — unless switched off — the registry itself), picks
//! this machine's platform out of an index or manifest list, and then fetches the config and
//! the layers from that endpoint, layers in parallel. Each layer is unpacked while it
//! downloads (the blob is written to a temp file and fed to the unpacker at once); blob and
//! snapshot reach their final names only after the blob's digest and size and the layer's
//! DiffID have been checked. The image keeps the names it was asked by (a pull of
//! `docker.io/library/busybox` through a mirror is still tagged `docker.io/library/busybox`).
//!
//! What a failed pull wrote is removed again, unless another image or another pull uses it:
//! a second pull starts from a clean store.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::unpack::{self, hex_digest};
use super::{digest_hex, normalize, oci, temp_path, Image, ImageError, ImageStore, Layer};

/// The `[registry]` table of rcri's config: mirrors, plain-http registries, timeouts.
///
/// ```toml
/// [registry]
/// insecure = ["127.0.0.1:5000"]          # spoken to over plain http
/// [registry.mirrors."docker.io"]
/// endpoints = ["http://127.0.0.1:5000"]  # tried in order, before docker.io itself
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry host (`docker.io`, `registry.k8s.io`, `host:port`) → its mirrors.
    pub mirrors: BTreeMap<String, Mirror>,
    /// Hosts (`host[:port]`) reached over http instead of https.
    pub insecure: Vec<String>,
    /// Seconds to wait for a TCP connection to a registry.
    pub connect_timeout_secs: u64,
    /// Seconds a registry may stay silent in the middle of a response.
    pub read_timeout_secs: u64,
    /// Layers downloaded (and unpacked) at the same time by one pull.
    pub max_concurrent_downloads: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            mirrors: BTreeMap::new(),
            insecure: Vec::new(),
            connect_timeout_secs: 10,
            read_timeout_secs: 60,
            max_concurrent_downloads: 3,
        }
    }
}

/// The mirrors of one registry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Mirror {
    /// `http://host[:port]`, `https://host[:port]` or `host[:port]` (https unless listed
    /// in `insecure`).
    pub endpoints: Vec<String>,
    /// Whether the registry itself is tried when no mirror has the image (containerd does
    /// so). Off for nodes that must never reach the upstream registry.
    pub fallback_to_upstream: bool,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            endpoints: Vec::new(),
            fallback_to_upstream: true,
        }
    }
}

/// Credentials for one pull, as CRI's `AuthConfig` carries them.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Basic {
        username: String,
        password: String,
    },
    /// A bearer token sent to the registry as is.
    RegistryToken(String),
    /// An OAuth2 refresh token, exchanged at the registry's token service for an access token.
    IdentityToken(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log secrets.
        match self {
            Auth::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Auth::RegistryToken(_) => write!(f, "RegistryToken(<redacted>)"),
            Auth::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Auth {
    /// CRI `AuthConfig` → credentials; `None` when it carries none. `server_address`, when
    /// set, limits them to that host (kubelet picked them for it).
    pub fn from_cri(
        a: &k8s_cri::v1::AuthConfig,
    ) -> Result<Option<(Auth, Option<String>)>, PullError> {
        let server = (!a.server_address.is_empty()).then(|| {
            // "https://host/v1/" and the like: keep the host.
            let s = a.server_address.as_str();
            let s = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"))
                .unwrap_or(s);
            s.split('/').next().unwrap_or(s).to_string()
        });
        let auth = if !a.registry_token.is_empty() {
            Some(Auth::RegistryToken(a.registry_token.clone()))
        } else if !a.identity_token.is_empty() {
            Some(Auth::IdentityToken(a.identity_token.clone()))
        } else if !a.username.is_empty() {
            Some(Auth::Basic {
                username: a.username.clone(),
                password: a.password.clone(),
            })
        } else if !a.auth.is_empty() {
            // base64("user:password"), as in docker's config.json.
            let decoded = base64_decode(a.auth.trim())
                .ok_or_else(|| PullError::BadAuth("auth is not valid base64".into()))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| PullError::BadAuth("auth is not UTF-8".into()))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| PullError::BadAuth("auth is not \"user:password\"".into()))?;
            Some(Auth::Basic {
                username: u.to_string(),
                password: p.to_string(),
            })
        } else {
            None
        };
        Ok(auth.map(|a| (a, server)))
    }
}

/// What went wrong talking to a registry (or storing what it sent).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{what} not found at {endpoint}: {detail}")]
    NotFound {
        what: String,
        endpoint: String,
        detail: String,
    },
    #[error("{endpoint} refused the credentials (or needs some): {detail}")]
    Unauthorized { endpoint: String, detail: String },
    #[error("registry {endpoint} is unreachable: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("registry {endpoint} timed out: {detail}")]
    Timeout { endpoint: String, detail: String },
    #[error("registry {endpoint}: {detail}")]
    Registry { endpoint: String, detail: String },
    #[error("{what} {digest}: the registry sent {actual} of {expected} bytes")]
    Truncated {
        what: &'static str,
        digest: String,
        expected: i64,
        actual: u64,
    },
    #[error("bad credentials in the request: {0}")]
    BadAuth(String),
    #[error("bad registry configuration: {0}")]
    BadConfig(String),
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] ImageError),
}

impl PullError {
    /// Whether the next endpoint (mirror → upstream) may have what this one did not.
    fn try_next_endpoint(&self) -> bool {
        matches!(
            self,
            PullError::NotFound { .. }
                | PullError::Unreachable { .. }
                | PullError::Timeout { .. }
                | PullError::Registry { .. }
        )
    }
}

/// One place to pull from: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `host[:port]`.
    host: String,
    http: bool,
    mirror: bool,
}

impl RegistryConfig {
    /// Refuses what would only fail later, at pull time.
    pub fn validate(&self) -> Result<(), PullError> {
        for (registry, m) in &self.mirrors {
            for e in &m.endpoints {
                parse_endpoint(e, &self.insecure).map_err(|reason| {
                    PullError::BadConfig(format!("mirror {e:?} of {registry}: {reason}"))
                })?;
            }
        }
        if self.max_concurrent_downloads == 0 {
            return Err(PullError::BadConfig(
                "max_concurrent_downloads must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The endpoints to try for `registry`, in order.
    fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>, PullError> {
        let mut out = Vec::new();
        let mut upstream = true;
        if let Some(m) = self.mirrors.get(registry) {
            for e in &m.endpoints {
                let (host, http) = parse_endpoint(e, &self.insecure).map_err(|reason| {
                    PullError::BadConfig(format!("mirror {e:?} of {registry}: {reason}"))
                })?;
                out.push(Endpoint {
                    host,
                    http,
                    mirror: true,
                });
            }
            upstream = m.fallback_to_upstream || out.is_empty();
        }
        if upstream {
            out.push(Endpoint {
                host: registry.to_string(),
                http: self.insecure.iter().any(|h| h == registry),
                mirror: false,
            });
        }
        Ok(out)
    }
}

/// `[scheme://]host[:port][/]` → (host[:port], plain http?).
fn parse_endpoint(e: &str, insecure: &[String]) -> Result<(String, bool), &'static str> {
    let (rest, scheme) = if let Some(r) = e.strip_prefix("http://") {
        (r, Some(true))
    } else if let Some(r) = e.strip_prefix("https://") {
        (r, Some(false))
    } else if e.contains("://") {
        return Err("only http:// and https:// endpoints are supported");
    } else {
        (e, None)
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err("expected [http[s]://]host[:port] without a path");
    }
    let http = scheme.unwrap_or_else(|| insecure.iter().any(|h| h == host));
    Ok((host.to_string(), http))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Async locks by name: pulls of one image, downloads of one blob, run one at a time.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

/// Content a pull is working on, kept from garbage collection until the pull is over; on
/// failure, what the pull wrote is removed unless something else now uses it.
struct Pins<'a> {
    store: &'a ImageStore,
    /// Blob and snapshot hexes pinned, with how often (an uncompressed layer's blob and
    /// snapshot share one hex).
    keys: HashMap<String, usize>,
    /// Paths this pull brought into the store (blobs and snapshots).
    written: Mutex<Vec<(String, PathBuf)>>,
    done: bool,
}

impl<'a> Pins<'a> {
    fn new(store: &'a ImageStore) -> Self {
        Pins {
            store,
            keys: HashMap::new(),
            written: Mutex::new(Vec::new()),
            done: false,
        }
    }

    fn pin(&mut self, hex: &str) {
        let mut pins = self.store.pins();
        *pins.entry(hex.to_string()).or_insert(0) += 1;
        *self.keys.entry(hex.to_string()).or_insert(0) += 1;
    }

    fn wrote(&self, hex: &str, path: PathBuf) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((hex.to_string(), path));
    }
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let mut pins = self.store.pins();
        if !self.done {
            // Remove what this pull alone brought in and no recorded image references.
            let referenced = self.store.referenced_content();
            let written =
                std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
            for (hex, path) in written {
                let mine = self.keys.get(&hex).copied().unwrap_or(0);
                let others = pins.get(&hex).copied().unwrap_or(0) > mine;
                if others || referenced.contains(&hex) {
                    continue;
                }
                let r = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if let Err(e) = r {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove what a failed pull wrote");
                    }
                }
            }
        }
        for (k, mine) in &self.keys {
            if let Some(n) = pins.get_mut(k) {
                *n = n.saturating_sub(*mine);
                if *n == 0 {
                    pins.remove(k);
                }
            }
        }
    }
}

const MANIFEST_TYPES: &[&str] = &[
    oci::OCI_INDEX,
    oci::OCI_MANIFEST,
    oci::DOCKER_LIST,
    oci::DOCKER_MANIFEST,
];

/// Documents over this size are not manifests or configs but a malformed (or hostile) image.
const MAX_DOCUMENT: i64 = 16 << 20;

/// One pull from one endpoint.
struct Session<'a> {
    store: &'a ImageStore,
    client: oci_client::Client,
    auth: RegistryAuth,
    reference: oci_client::Reference,
    endpoint: Endpoint,
    config: &'a RegistryConfig,
}

impl ImageStore {
    /// Pulls `reference` (normalized as kubelet does) from its registry or the configured
    /// mirrors, and records it. Pulls of the same reference run one at a time: the second
    /// finds the blobs and snapshots in place and only re-reads the manifest.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<Auth>,
        config: &RegistryConfig,
    ) -> Result<Image, ImageError> {
        self.pull_with_server(reference, auth.map(|a| (a, None)), config)
            .await
    }

    /// [`ImageStore::pull`] with credentials that apply only to `server` (CRI's
    /// `server_address`) when it is given.
    pub async fn pull_with_server(
        &self,
        reference: &str,
        auth: Option<(Auth, Option<String>)>,
        config: &RegistryConfig,
    ) -> Result<Image, ImageError> {
        let r = normalize(reference)?;
        let name = r.to_string();
        let started = std::time::Instant::now();
        let _one_at_a_time = self.pull_locks.lock(&name).await;
        let res = self.pull_locked(&r, auth, config).await;
        match &res {
            Ok(img) => {
                tracing::info!(image = %name, id = %img.id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled")
            }
            Err(e) => tracing::warn!(image = %name, error = %e, "pull failed"),
        }
        res.map_err(|e| ImageError::Pull {
            image: name,
            cause: Box::new(e),
        })
    }

    async fn pull_locked(
        &self,
        r: &super::Reference,
        auth: Option<(Auth, Option<String>)>,
        config: &RegistryConfig,
    ) -> Result<Image, PullError> {
        let endpoints = config.endpoints(&r.domain)?;
        let mut last = None;
        for (i, ep) in endpoints.iter().enumerate() {
            // Credentials kubelet chose for another host are not sent here.
            let ep_auth = match &auth {
                Some((a, Some(server))) if server != &ep.host && server != &r.domain => None,
                Some((a, _)) => Some(a.clone()),
                None => None,
            };
            let session = Session::new(self, r, ep.clone(), ep_auth, config).await;
            let session = match session {
                Ok(s) => s,
                Err(e) if e.try_next_endpoint() && i + 1 < endpoints.len() => {
                    tracing::info!(endpoint = %ep.host, error = %e, "trying the next endpoint");
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match session.resolve().await {
                Ok(resolved) => return session.fetch(r, resolved).await,
                Err(e) if e.try_next_endpoint() && i + 1 < endpoints.len() => {
                    tracing::info!(endpoint = %ep.host, error = %e, "trying the next endpoint");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| PullError::Internal("no endpoint to pull from".into())))
    }

    pub(crate) fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The manifest a reference resolved to, with the document the tag points at.
struct Resolved {
    /// The digest the tag points at (an index's when it is one): the image's repo digest.
    top_digest: String,
    top_size: u64,
    manifest: oci::Manifest,
    /// The platform's manifest (the same as `top_digest` without an index).
    manifest_digest: String,
    /// Documents to store: (digest, bytes).
    documents: Vec<(String, Vec<u8>)>,
}

impl<'a> Session<'a> {
    async fn new(
        store: &'a ImageStore,
        r: &super::Reference,
        endpoint: Endpoint,
        auth: Option<Auth>,
        config: &'a RegistryConfig,
    ) -> Result<Session<'a>, PullError> {
        let mut http_hosts: Vec<String> = config.insecure.clone();
        if endpoint.http && !http_hosts.contains(&endpoint.host) {
            http_hosts.push(endpoint.host.clone());
        }
        let client_config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(http_hosts),
            connect_timeout: Some(Duration::from_secs(config.connect_timeout_secs.max(1))),
            read_timeout: Some(Duration::from_secs(config.read_timeout_secs.max(1))),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(client_config)
            .map_err(|e| PullError::Internal(format!("HTTP client: {e}")))?;
        let mut reference = match (&r.tag, &r.digest) {
            (_, Some(d)) => {
                oci_client::Reference::with_digest(r.domain.clone(), r.path.clone(), d.clone())
            }
            (Some(t), None) => {
                oci_client::Reference::with_tag(r.domain.clone(), r.path.clone(), t.clone())
            }
            (None, None) => {
                return Err(PullError::Internal(
                    "reference without tag or digest".into(),
                ))
            }
        };
        if endpoint.mirror {
            reference.set_mirror_registry(endpoint.host.clone());
        }
        let mut session = Session {
            store,
            client,
            auth: RegistryAuth::Anonymous,
            reference,
            endpoint,
            config,
        };
        session.auth = match auth {
            None => RegistryAuth::Anonymous,
            Some(Auth::Basic { username, password }) => RegistryAuth::Basic(username, password),
            Some(Auth::RegistryToken(t)) => RegistryAuth::Bearer(t),
            Some(Auth::IdentityToken(t)) => {
                RegistryAuth::Bearer(session.exchange_identity_token(&t).await?)
            }
        };
        // Token registries: fetch the pull token now, so that refused credentials show as
        // such rather than as the anonymous request's 401 later.
        session
            .client
            .auth(&session.reference, &session.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| session.map_err("registry", e))?;
        Ok(session)
    }

    fn endpoint_name(&self) -> String {
        format!(
            "{}://{}",
            if self.endpoint.http { "http" } else { "https" },
            self.endpoint.host
        )
    }

    /// Maps oci-client's errors onto what a kubelet user needs to know.
    fn map_err(&self, what: &str, e: OciDistributionError) -> PullError {
        let endpoint = self.endpoint_name();
        match e {
            OciDistributionError::UnauthorizedError { url } => PullError::Unauthorized {
                endpoint,
                detail: format!("401 Unauthorized for {url}"),
            },
            OciDistributionError::AuthenticationFailure(detail) => {
                PullError::Unauthorized { endpoint, detail }
            }
            OciDistributionError::RegistryError { envelope, url } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let detail = format!(
                    "{url}: {}",
                    envelope
                        .errors
                        .iter()
                        .map(|e| format!("{:?}: {}", e.code, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    PullError::NotFound {
                        what: what.to_string(),
                        endpoint,
                        detail,
                    }
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    PullError::Unauthorized { endpoint, detail }
                } else {
                    PullError::Registry { endpoint, detail }
                }
            }
            OciDistributionError::ServerError { code, url, message } => {
                let detail = format!("HTTP {code} for {url}: {}", message.trim());
                match code {
                    404 => PullError::NotFound {
                        what: what.to_string(),
                        endpoint,
                        detail,
                    },
                    401 | 403 => PullError::Unauthorized { endpoint, detail },
                    _ => PullError::Registry { endpoint, detail },
                }
            }
            OciDistributionError::RequestError(e) => request_error(endpoint, &e),
            other => PullError::Registry {
                endpoint,
                detail: other.to_string(),
            },
        }
    }

    /// The OAuth2 refresh-token grant (what docker and containerd do with an identity token):
    /// the registry's token service trades it for an access token for this repository.
    async fn exchange_identity_token(&self, token: &str) -> Result<String, PullError> {
        let endpoint = self.endpoint_name();
        let http = reqwest_client(self.config)?;
        let url = format!("{endpoint}/v2/");
        let res = http
            .get(&url)
            .send()
            .await
            .map_err(|e| request_error(endpoint.clone(), &e))?;
        let challenge = res
            .headers()
            .get("www-authenticate")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| PullError::Unauthorized {
                endpoint: endpoint.clone(),
                detail: "an identity token was given but the registry asks for no token".into(),
            })?;
        let params = parse_bearer_challenge(&challenge).ok_or_else(|| PullError::Unauthorized {
            endpoint: endpoint.clone(),
            detail: format!("identity token: no Bearer challenge in {challenge:?}"),
        })?;
        let realm = params.get("realm").cloned().unwrap_or_default();
        let scope = format!("repository:{}:pull", self.reference.repository());
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", token.to_string()),
            ("client_id", "rcri".to_string()),
            ("scope", scope),
        ];
        if let Some(s) = params.get("service") {
            form.push(("service", s.clone()));
        }
        let res = http
            .post(&realm)
            .form(&form)
            .send()
            .await
            .map_err(|e| request_error(endpoint.clone(), &e))?;
        let status = res.status();
        let body = res
            .bytes()
            .await
            .map_err(|e| request_error(endpoint.clone(), &e))?;
        if !status.is_success() {
            return Err(PullError::Unauthorized {
                endpoint,
                detail: format!(
                    "token service {realm} refused the identity token: HTTP {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            token: String,
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| PullError::Registry {
            endpoint: endpoint.clone(),
            detail: format!("token service {realm}: bad answer: {e}"),
        })?;
        let t = if t.access_token.is_empty() {
            t.token
        } else {
            t.access_token
        };
        if t.is_empty() {
            return Err(PullError::Unauthorized {
                endpoint,
                detail: format!("token service {realm} returned no token"),
            });
        }
        Ok(t)
    }

    /// Fetches the manifest (through an index when the tag names one) and picks the platform.
    async fn resolve(&self) -> Result<Resolved, PullError> {
        let (top_bytes, _registry_digest) = self
            .client
            .pull_manifest_raw(&self.reference, &self.auth, MANIFEST_TYPES)
            .await
            .map_err(|e| self.map_err("manifest", e))?;
        let top_bytes = top_bytes.to_vec();
        let top_digest = verify_document("manifest", &top_bytes, self.reference.digest())?;
        let mut documents = vec![(top_digest.clone(), top_bytes.clone())];
        let doc: serde_json::Value = parse_json("manifest", &top_digest, &top_bytes)?;
        let media_type = doc
            .get("mediaType")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                if doc.get("manifests").is_some() {
                    oci::OCI_INDEX.to_string()
                } else {
                    oci::OCI_MANIFEST.to_string()
                }
            });
        let (manifest_digest, manifest_bytes) = if oci::is_index(&media_type) {
            let index: oci::Index = parse_json("index", &top_digest, &top_bytes)?;
            let want = oci::host_platform();
            let chosen = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| oci::platform_matches(p, &want))
                })
                .ok_or_else(|| {
                    let offered: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref())
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .collect();
                    ImageError::NoMatchingPlatform {
                        image: self.reference.whole(),
                        platform: format!(
                            "{}/{} (it has {})",
                            want.os,
                            want.architecture,
                            if offered.is_empty() {
                                "none".to_string()
                            } else {
                                offered.join(", ")
                            }
                        ),
                    }
                })?;
            if chosen.size > MAX_DOCUMENT {
                return Err(too_large("manifest", &chosen.digest, chosen.size));
            }
            let child = self.reference.clone_with_digest(chosen.digest.clone());
            let (bytes, _registry_digest) = self
                .client
                .pull_manifest_raw(&child, &self.auth, MANIFEST_TYPES)
                .await
                .map_err(|e| self.map_err("platform manifest", e))?;
            let bytes = bytes.to_vec();
            let digest = verify_document("manifest", &bytes, Some(&chosen.digest))?;
            documents.push((digest.clone(), bytes.clone()));
            (digest, bytes)
        } else {
            (top_digest.clone(), top_bytes.clone())
        };
        let manifest: oci::Manifest = parse_json("manifest", &manifest_digest, &manifest_bytes)?;
        let mt = if manifest.media_type.is_empty() {
            oci::OCI_MANIFEST
        } else {
            manifest.media_type.as_str()
        };
        if !oci::is_manifest(mt) {
            return Err(ImageError::BadDocument {
                what: "manifest",
                digest: manifest_digest,
                reason: format!(
                    "unsupported media type {mt:?} (schema 1 and artifacts are not images)"
                ),
            }
            .into());
        }
        Ok(Resolved {
            top_digest,
            top_size: top_bytes.len() as u64,
            manifest,
            manifest_digest,
            documents,
        })
    }

    /// Fetches config and layers of a resolved manifest and records the image.
    async fn fetch(&self, r: &super::Reference, res: Resolved) -> Result<Image, PullError> {
        let mut pins = Pins::new(self.store);
        let result = self.fetch_pinned(r, res, &mut pins).await;
        if result.is_ok() {
            pins.done = true;
        }
        result
    }

    async fn fetch_pinned(
        &self,
        r: &super::Reference,
        res: Resolved,
        pins: &mut Pins<'_>,
    ) -> Result<Image, PullError> {
        let store = self.store;
        tracing::debug!(manifest = %res.manifest_digest, endpoint = %self.endpoint_name(), "fetching layers");
        let config_desc = &res.manifest.config;
        let mut hexes = vec![digest_hex(config_desc.digest.as_str())?.to_string()];
        for (d, _) in &res.documents {
            hexes.push(digest_hex(d)?.to_string());
        }
        for l in &res.manifest.layers {
            hexes.push(digest_hex(&l.digest)?.to_string());
        }
        for h in &hexes {
            pins.pin(h);
        }

        for (d, bytes) in &res.documents {
            self.store_document(d, bytes, pins)?;
        }
        if config_desc.size > MAX_DOCUMENT {
            return Err(too_large("config", &config_desc.digest, config_desc.size));
        }
        let config_bytes = match fs::read(store.blob_path(&config_desc.digest)?) {
            Ok(b) if sha256_of(&b) == config_desc.digest => b,
            _ => {
                let mut buf = Vec::new();
                self.client
                    .pull_blob(&self.reference, &oci_descriptor(config_desc), &mut buf)
                    .await
                    .map_err(|e| match e {
                        OciDistributionError::DigestError(_) => {
                            PullError::Store(ImageError::DigestMismatch {
                                what: "config",
                                expected: config_desc.digest.clone(),
                                actual: sha256_of(&buf),
                            })
                        }
                        e => self.map_err("config blob", e),
                    })?;
                verify_document("config", &buf, Some(&config_desc.digest))?;
                self.store_document(&config_desc.digest, &buf, pins)?;
                buf
            }
        };
        let config: oci::ImageConfigFile =
            parse_json("config", &config_desc.digest, &config_bytes)?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != res.manifest.layers.len() {
            return Err(ImageError::BadDocument {
                what: "config",
                digest: config_desc.digest.clone(),
                reason: format!(
                    "{} diff_ids for {} layers",
                    diff_ids.len(),
                    res.manifest.layers.len()
                ),
            }
            .into());
        }
        for d in diff_ids {
            let h = digest_hex(d)?.to_string();
            pins.pin(&h);
        }

        let pins_ref: &Pins<'_> = pins;
        // Made eagerly (a Vec, not a lazy map): a closure over borrowed pairs makes the pull
        // future fail the `Send` check tonic's handlers need (higher-ranked lifetimes).
        let jobs: Vec<_> = res
            .manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| self.layer(l, d, pins_ref))
            .collect();
        // Every layer runs to its end even when one fails: a download dropped halfway would
        // leave its unpacker and temp files behind.
        let results: Vec<Result<(), PullError>> = futures_util::stream::iter(jobs)
            .buffer_unordered(self.config.max_concurrent_downloads.max(1))
            .collect()
            .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }

        let layers: Vec<Layer> = res
            .manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| Layer {
                digest: l.digest.clone(),
                diff_id: d.clone(),
                media_type: l.media_type.clone(),
                size: u64::try_from(l.size).unwrap_or(0),
            })
            .collect();
        let size = layers.iter().map(|l| l.size).sum::<u64>()
            + u64::try_from(config_desc.size).unwrap_or(0)
            + res.top_size;
        let img = super::image_from_config(
            config_desc.digest.clone(),
            config.config.unwrap_or_default(),
            res.top_digest.clone(),
            layers,
            size,
        );
        let tags: Vec<String> = r.tagged().into_iter().collect();
        let mut img = store.record(img, &tags)?;
        // A pull by digest has no tag to derive the repo digest from.
        let repo_digest = format!("{}@{}", r.name(), res.top_digest);
        if !img.repo_digests.contains(&repo_digest) {
            img.repo_digests.push(repo_digest);
            img = store.record(img, &[])?;
        }
        Ok(img)
    }

    /// Writes a verified small document into the content store (unless there).
    fn store_document(&self, digest: &str, bytes: &[u8], pins: &Pins<'_>) -> Result<(), PullError> {
        let dst = self.store.blob_path(digest)?;
        if dst.exists() {
            return Ok(());
        }
        let hex = digest_hex(digest)?;
        let tmp = temp_path(&self.store.blob_dir(), hex);
        let res = (|| -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            io::Write::write_all(&mut f, bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(ImageError::Io {
                what: "write",
                path: dst,
                source: e,
            }
            .into());
        }
        pins.wrote(hex, dst);
        Ok(())
    }

    /// Downloads one layer (unless its snapshot exists) and unpacks it while it arrives.
    async fn layer(
        &self,
        desc: &oci::Descriptor,
        diff_id: &str,
        pins: &Pins<'_>,
    ) -> Result<(), PullError> {
        let store = self.store;
        let snap = store.snapshot_path(diff_id)?;
        if snap.is_dir() {
            return Ok(());
        }
        // Two images with this layer pulled at once: one downloads, the other waits.
        let _one = store.blob_locks.lock(&desc.digest).await;
        if snap.is_dir() {
            return Ok(());
        }
        let blob = store.blob_path(&desc.digest)?;
        if blob.is_file() {
            // Downloaded earlier (an import or an interrupted pull): unpack from the store.
            let (b, s, d) = (blob.clone(), store.snapshot_dir(), diff_id.to_string());
            let digest = desc.digest.clone();
            tokio::task::spawn_blocking(move || {
                let f = fs::File::open(&b).map_err(|source| ImageError::Io {
                    what: "open",
                    path: b.clone(),
                    source,
                })?;
                unpack_snapshot(f, &s, &digest, &d)
            })
            .await
            .map_err(|e| PullError::Internal(format!("unpack task: {e}")))??;
            pins.wrote(digest_hex(diff_id)?, snap);
            return Ok(());
        }
        self.download_and_unpack(desc, diff_id, pins).await
    }

    async fn download_and_unpack(
        &self,
        desc: &oci::Descriptor,
        diff_id: &str,
        pins: &Pins<'_>,
    ) -> Result<(), PullError> {
        let store = self.store;
        let hex = digest_hex(&desc.digest)?;
        let blob = store.blob_dir().join(hex);
        let tmp = temp_path(&store.blob_dir(), hex);
        // Removes the temp file however this ends, also when the pull is cancelled (tonic
        // drops the handler's future when kubelet goes away).
        let mut tmp_guard = TempFile(Some(tmp.clone()));
        let expected_size = u64::try_from(desc.size).map_err(|_| ImageError::BadDocument {
            what: "manifest",
            digest: desc.digest.clone(),
            reason: format!("negative layer size {}", desc.size),
        })?;

        // The unpacker runs on a blocking thread and reads the bytes as they arrive.
        // A tokio channel: a full one makes the download wait (await) instead of blocking
        // one of the runtime's few worker threads, which other layers' downloads need.
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        let snapshot_dir = store.snapshot_dir();
        let (digest, diff) = (desc.digest.clone(), diff_id.to_string());
        let unpacker = tokio::task::spawn_blocking(move || {
            unpack_snapshot(ChannelReader::new(rx), &snapshot_dir, &digest, &diff)
        });

        let download = async {
            let mut stream = self
                .client
                .pull_blob_stream(&self.reference, &oci_descriptor(desc))
                .await
                .map_err(|e| self.map_err("layer blob", e))?;
            let mut file = tokio::io::BufWriter::with_capacity(
                1 << 20,
                tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|source| ImageError::Io {
                        what: "create",
                        path: tmp.clone(),
                        source,
                    })?,
            );
            let mut hasher = Sha256::new();
            let mut n: u64 = 0;
            let mut tx = Some(tx);
            let mut stream_err = None;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        stream_err = Some(e);
                        break;
                    }
                };
                n += chunk.len() as u64;
                if n > expected_size {
                    // More than the descriptor promised: not this blob; stop reading.
                    break;
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|source| ImageError::Io {
                        what: "write",
                        path: tmp.clone(),
                        source,
                    })?;
                // An unpacker that stopped (bad layer) drops its end; keep downloading so
                // that a damaged blob is reported by its digest rather than as bad data.
                if let Some(t) = &tx {
                    if t.send(chunk).await.is_err() {
                        tx = None;
                    }
                }
            }
            drop(tx);
            file.flush().await.map_err(|source| ImageError::Io {
                what: "write",
                path: tmp.clone(),
                source,
            })?;
            file.get_mut()
                .sync_all()
                .await
                .map_err(|source| ImageError::Io {
                    what: "sync",
                    path: tmp.clone(),
                    source,
                })?;
            let actual = hex_digest(hasher.finalize().as_slice());
            if n > expected_size {
                return Err(PullError::Store(ImageError::SizeMismatch {
                    what: "layer",
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: n,
                }));
            }
            if n < expected_size {
                return Err(match stream_err {
                    Some(e) if !is_verification_error(&e) => {
                        download_error(self.endpoint_name(), &desc.digest, n, expected_size, &e)
                    }
                    _ => PullError::Truncated {
                        what: "layer",
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        actual: n,
                    },
                });
            }
            if actual != desc.digest {
                return Err(PullError::Store(ImageError::DigestMismatch {
                    what: "layer",
                    expected: desc.digest.clone(),
                    actual,
                }));
            }
            if let Some(e) = stream_err {
                if !is_verification_error(&e) {
                    return Err(download_error(
                        self.endpoint_name(),
                        &desc.digest,
                        n,
                        expected_size,
                        &e,
                    ));
                }
            }
            Ok(())
        };
        let downloaded: Result<(), PullError> = download.await;
        // The unpacker ends once the sender is gone (on every path above).
        let unpacked = unpacker
            .await
            .map_err(|e| PullError::Internal(format!("unpack task: {e}")));
        match (downloaded, unpacked) {
            (Ok(()), Ok(Ok(()))) => {}
            // A damaged download explains a failed unpack: report the download.
            (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
            (Ok(()), Ok(Err(e))) => return Err(e.into()),
        }
        pins.wrote(digest_hex(diff_id)?, store.snapshot_path(diff_id)?);
        if let Err(source) = fs::rename(&tmp, &blob) {
            return Err(ImageError::Io {
                what: "rename into place",
                path: blob,
                source,
            }
            .into());
        }
        tmp_guard.0 = None;
        pins.wrote(hex, blob);
        Ok(())
    }
}

/// A temp file removed on drop unless taken out (renamed into place).
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// `Read` over the chunks a download sends; ends when the sender is dropped.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        ChannelReader {
            rx,
            cur: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            // On a blocking thread (spawn_blocking), where waiting is allowed.
            match self.rx.blocking_recv() {
                Some(c) => self.cur = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Unpacks a layer read from `blob` into `snapshots/<diff_id hex>` unless it exists: into a
/// temp dir first, renamed into place only when the uncompressed content has the DiffID.
/// Reads `blob` to its end even after an error, so that the sender can finish.
pub(crate) fn unpack_snapshot<R: Read>(
    blob: R,
    snapshot_dir: &Path,
    blob_digest: &str,
    diff_id: &str,
) -> Result<(), ImageError> {
    let hex = digest_hex(diff_id)?;
    let dst = snapshot_dir.join(hex);
    if dst.is_dir() {
        return Ok(());
    }
    let tmp = temp_path(snapshot_dir, hex);
    let res = (|| -> Result<(), ImageError> {
        fs::create_dir(&tmp).map_err(|source| ImageError::Io {
            what: "create",
            path: tmp.clone(),
            source,
        })?;
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(
            |source| ImageError::Io {
                what: "chmod",
                path: tmp.clone(),
                source,
            },
        )?;
        let unpacked = unpack::unpack_layer(blob, &tmp).map_err(|source| ImageError::Unpack {
            layer: blob_digest.to_string(),
            source,
        })?;
        if unpacked.diff_id != diff_id {
            return Err(ImageError::DigestMismatch {
                what: "uncompressed layer (DiffID)",
                expected: diff_id.to_string(),
                actual: unpacked.diff_id,
            });
        }
        // Durable before it has its final name: a crash then leaves no snapshot or a whole
        // one. Per layer, not once per pull: the flush of one layer overlaps the download and
        // unpacking of the others (measured: one syncfs at the end of the pull was slower).
        super::sync_tree(&tmp).map_err(|source| ImageError::Io {
            what: "syncfs",
            path: tmp.clone(),
            source,
        })?;
        match fs::rename(&tmp, &dst) {
            Ok(()) => Ok(()),
            // Unpacked meanwhile by an import: the same content, keep theirs.
            Err(_) if dst.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(source) => Err(ImageError::Io {
                what: "rename into place",
                path: dst.clone(),
                source,
            }),
        }
    })();
    if res.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    res
}

fn oci_descriptor(d: &oci::Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        ..Default::default()
    }
}

fn sha256_of(b: &[u8]) -> String {
    hex_digest(Sha256::digest(b).as_slice())
}

/// Checks a manifest-like document against the digest we asked for (when by digest) and
/// returns its real digest (not trusting the registry's header for the content).
fn verify_document(
    what: &'static str,
    bytes: &[u8],
    wanted: Option<&str>,
) -> Result<String, PullError> {
    let actual = sha256_of(bytes);
    if let Some(w) = wanted {
        if w.starts_with("sha256:") && w != actual {
            return Err(ImageError::DigestMismatch {
                what,
                expected: w.to_string(),
                actual,
            }
            .into());
        }
        if !w.starts_with("sha256:") {
            return Err(ImageError::UnsupportedDigest(w.to_string()).into());
        }
    }
    Ok(actual)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &str,
    bytes: &[u8],
) -> Result<T, PullError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ImageError::BadDocument {
            what,
            digest: digest.to_string(),
            reason: e.to_string(),
        }
        .into()
    })
}

fn too_large(what: &'static str, digest: &str, size: i64) -> PullError {
    ImageError::BadDocument {
        what,
        digest: digest.to_string(),
        reason: format!("{size} bytes is too large"),
    }
    .into()
}

/// oci-client reports its own end-of-stream digest check as an io error; ours is clearer.
fn is_verification_error(e: &io::Error) -> bool {
    let s = e.to_string().to_lowercase();
    s.contains("digest") || s.contains("verif")
}

fn download_error(endpoint: String, digest: &str, got: u64, want: u64, e: &io::Error) -> PullError {
    let text = crate::sandbox::crate_error_chain(e);
    if text.to_lowercase().contains("timed out") || text.to_lowercase().contains("timeout") {
        PullError::Timeout {
            endpoint,
            detail: format!("downloading {digest} ({got} of {want} bytes): {text}"),
        }
    } else {
        PullError::Registry {
            endpoint,
            detail: format!("downloading {digest} ({got} of {want} bytes): {text}"),
        }
    }
}

fn request_error(endpoint: String, e: &dyn std::error::Error) -> PullError {
    let text = crate::sandbox::crate_error_chain(e);
    let lower = text.to_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        PullError::Timeout {
            endpoint,
            detail: text,
        }
    } else if lower.contains("connect")
        || lower.contains("refused")
        || lower.contains("dns")
        || lower.contains("resolve")
    {
        PullError::Unreachable {
            endpoint,
            detail: text,
        }
    } else {
        PullError::Registry {
            endpoint,
            detail: text,
        }
    }
}

/// A client for the identity-token exchange, with the pull's timeouts.
fn reqwest_client(config: &RegistryConfig) -> Result<reqwest::Client, PullError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
        .read_timeout(Duration::from_secs(config.read_timeout_secs.max(1)))
        .build()
        .map_err(|e| PullError::Internal(format!("HTTP client: {e}")))
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn parse_bearer_challenge(h: &str) -> Option<HashMap<String, String>> {
    let rest = h.trim();
    let (scheme, params) = rest.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = HashMap::new();
    let mut s = params.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        out.insert(k, v.to_string());
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    out.contains_key("realm").then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_mirrors_then_upstream() {
        let c: RegistryConfig = toml::from_str(
            r#"
insecure = ["127.0.0.1:5000"]
[mirrors."docker.io"]
endpoints = ["http://127.0.0.1:5001", "127.0.0.1:5000", "https://m.example"]
[mirrors."registry.k8s.io"]
endpoints = ["http://127.0.0.1:5001"]
fallback_to_upstream = false
"#,
        )
        .unwrap();
        c.validate().unwrap();
        let hosts: Vec<(String, bool, bool)> = c
            .endpoints("docker.io")
            .unwrap()
            .into_iter()
            .map(|e| (e.host, e.http, e.mirror))
            .collect();
        assert_eq!(
            hosts,
            [
                ("127.0.0.1:5001".to_string(), true, true),
                ("127.0.0.1:5000".to_string(), true, true),
                ("m.example".to_string(), false, true),
                ("docker.io".to_string(), false, false),
            ]
        );
        assert_eq!(c.endpoints("registry.k8s.io").unwrap().len(), 1);
        let q = c.endpoints("quay.io").unwrap();
        assert_eq!(q.len(), 1);
        assert!(!q[0].http);
        let up = c.endpoints("127.0.0.1:5000").unwrap();
        assert!(up[0].http);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in ["ftp://x", "http://x/path", "", "http://"] {
            let mut c = RegistryConfig::default();
            c.mirrors.insert(
                "docker.io".into(),
                Mirror {
                    endpoints: vec![bad.into()],
                    fallback_to_upstream: true,
                },
            );
            assert!(c.validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cri_auth_is_mapped() {
        let mut a = k8s_cri::v1::AuthConfig {
            auth: "dXNlcjpwYXNzOndvcmQ=".into(),
            ..Default::default()
        };
        let (got, server) = Auth::from_cri(&a).unwrap().unwrap();
        assert_eq!(
            got,
            Auth::Basic {
                username: "user".into(),
                password: "pass:word".into()
            }
        );
        assert_eq!(server, None);
        a.server_address = "https://127.0.0.1:5000/v1/".into();
        a.registry_token = "t".into();
        let (got, server) = Auth::from_cri(&a).unwrap().unwrap();
        assert_eq!(got, Auth::RegistryToken("t".into()));
        assert_eq!(server.as_deref(), Some("127.0.0.1:5000"));
        assert!(format!("{got:?}").contains("redacted"));
        assert!(Auth::from_cri(&Default::default()).unwrap().is_none());
        let bad = k8s_cri::v1::AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(Auth::from_cri(&bad).is_err());
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
    }
}
