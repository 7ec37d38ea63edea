//! Operators' view of the cluster: list the shards with their load and state, ask one to
//! drain, and see how this process's dependencies answer. Every route needs
//! `Authorization: Bearer <admin token>`; without a configured token the routes do not
//! exist (404), so an unconfigured deployment exposes nothing.

use std::sync::Arc;

use crate::ErrorCode;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::health::{DependencyStatus, Health};
use crate::http::{ApiJson, HttpError};
use crate::registry::{RegistryError, ShardInfo, ShardRegistry, ShardState};

#[derive(Clone)]
struct AdminState {
    registry: Arc<dyn ShardRegistry>,
}

/// The admin token as every listener checks it (the API's admin routes, the shards' drain,
/// the ops paths): SHA-256 digests compared in constant time, so timing reveals neither
/// the token's bytes nor its length; an empty token means the admin endpoints are off.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    /// `None` when no token (or an empty one) is configured: the endpoints are disabled.
    pub fn new(token: Option<&str>) -> Option<Self> {
        token.filter(|t| !t.is_empty()).map(|t| Self {
            digest: digest(t.as_bytes()),
        })
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    pub fn permits(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|presented| constant_time_eq(&digest(presented), &self.digest))
    }
}

/// The `401 admin_unauthorized` answer (with `WWW-Authenticate: Bearer`).
pub fn unauthorized() -> Response {
    metrics::counter!("surge_admin_unauthorized_total").increment(1);
    let mut response = HttpError::unauthorized(
        ErrorCode::AdminUnauthorized,
        "this endpoint needs `Authorization: Bearer <admin token>`",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `GET /v1/admin/status`: whether this process serves, and its dependencies' last checks.
#[derive(Debug, Serialize)]
pub struct ProcessStatus {
    pub ready: bool,
    /// Why it is not ready (draining, stopped), when it is not.
    pub not_ready: Vec<String>,
    pub dependencies: Vec<DependencyStatus>,
}

/// One shard as the admin listing shows it.
#[derive(Debug, Serialize)]
pub struct ShardView {
    #[serde(flatten)]
    pub info: ShardInfo,
    /// Whether placement would send it a new room now.
    pub accepts_new_rooms: bool,
    /// Free participant slots, the weight placement gives it.
    pub free_participants: u32,
    /// Rooms placed on it (occupied, or placed and not yet joined).
    pub pinned_rooms: u32,
}

/// `GET /v1/admin/shards`.
#[derive(Debug, Serialize)]
pub struct ShardList {
    pub shards: Vec<ShardView>,
}

/// `POST /v1/admin/shards/{id}/drain`.
#[derive(Debug, Serialize)]
pub struct DrainAccepted {
    pub id: String,
    pub state: ShardState,
}

/// The admin routes, or an empty router (every admin path then answers the JSON 404)
/// when `admin_token` is `None` or empty.
pub fn router(registry: Arc<dyn ShardRegistry>, admin_token: Option<String>) -> Router {
    guarded(
        Router::new()
            .route("/v1/admin/shards", get(list_shards))
            .route("/v1/admin/shards/{id}/drain", post(drain_shard))
            .with_state(AdminState { registry }),
        admin_token,
    )
}

/// `GET /v1/admin/status` for this process (every listener has it), or an empty router
/// without an admin token.
pub fn status_router(health: Health, admin_token: Option<String>) -> Router {
    guarded(
        Router::new()
            .route("/v1/admin/status", get(process_status))
            .with_state(health),
        admin_token,
    )
}

fn guarded(routes: Router, admin_token: Option<String>) -> Router {
    let Some(guard) = AdminToken::new(admin_token.as_deref()) else {
        return Router::new();
    };
    routes.route_layer(middleware::from_fn_with_state(guard, authorize))
}

async fn process_status(State(health): State<Health>) -> ApiJson<ProcessStatus> {
    let not_ready = health.ready().err().unwrap_or_default();
    ApiJson(ProcessStatus {
        ready: not_ready.is_empty(),
        not_ready,
        dependencies: health.dependencies(),
    })
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value.get(7..))
        .flatten()
}

async fn authorize(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    if token.permits(request.headers()) {
        next.run(request).await
    } else {
        unauthorized()
    }
}

fn registry_error(e: RegistryError) -> HttpError {
    tracing::warn!(%e, "admin request could not reach the shard registry");
    HttpError::unavailable(
        ErrorCode::RegistryUnavailable,
        "the shard registry cannot be reached right now",
        std::time::Duration::from_secs(1),
    )
}

async fn list_shards(State(state): State<AdminState>) -> Result<ApiJson<ShardList>, HttpError> {
    let live = state.registry.live_shards().await.map_err(registry_error)?;
    let ids: Vec<String> = live.iter().map(|s| s.id.clone()).collect();
    let pinned = state
        .registry
        .pinned_rooms(&ids)
        .await
        .map_err(registry_error)?;
    let shards = live
        .into_iter()
        .enumerate()
        .map(|(i, info)| ShardView {
            accepts_new_rooms: info.accepts_new_rooms(),
            free_participants: info.free_participants(),
            pinned_rooms: pinned.get(i).copied().unwrap_or(0),
            info,
        })
        .collect();
    Ok(ApiJson(ShardList { shards }))
}

async fn drain_shard(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<DrainAccepted>), HttpError> {
    let known = state
        .registry
        .request_drain(&id)
        .await
        .map_err(registry_error)?;
    if !known {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ShardNotFound,
            format!("no live shard has the id {id:?}"),
        ));
    }
    tracing::info!(shard = %id, "operator asked a shard to drain");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(DrainAccepted {
            id,
            state: ShardState::Draining,
        }),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::registry::{MemoryRegistry, ShardLoad};
    use axum::body::Body;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::ServiceExt;

    fn shard(id: &str) -> ShardInfo {
        ShardInfo {
            load: ShardLoad {
                rooms: 2,
                participants: 7,
                egress_bps: 1_000_000,
                cpu: 0.25,
            },
            ..ShardInfo::new(id, format!("http://{id}.test"), "127.0.0.1:5000", 10, 100)
        }
    }

    async fn app(token: Option<&str>) -> (Router, Arc<MemoryRegistry>) {
        let registry = Arc::new(MemoryRegistry::new());
        registry
            .heartbeat(&shard("sfu-0"), Duration::from_secs(60))
            .await
            .unwrap();
        let router = crate::http::finish_router(router(registry.clone(), token.map(Into::into)));
        (router, registry)
    }

    async fn call(
        router: &Router,
        method: &str,
        uri: &str,
        auth: Option<&str>,
    ) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json, headers)
    }

    #[test]
    fn one_admin_token_check_empty_disables_and_length_does_not_matter() {
        assert!(AdminToken::new(None).is_none());
        assert!(AdminToken::new(Some("")).is_none(), "empty means disabled");
        let token = AdminToken::new(Some("s3cret")).unwrap();
        let headers = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            h
        };
        assert!(token.permits(&headers("Bearer s3cret")));
        assert!(token.permits(&headers("bearer s3cret")));
        for wrong in [
            "Bearer ",
            "Bearer s3cre",
            "Bearer s3cret ",
            "Bearer s3cretX",
            "Basic s3cret",
            "s3cret",
        ] {
            assert!(!token.permits(&headers(wrong)), "{wrong:?}");
        }
        assert!(!token.permits(&HeaderMap::new()));
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
    }

    #[tokio::test]
    async fn lists_shards_with_load_and_state() {
        let (router, registry) = app(Some("s3cret")).await;
        registry
            .pin_room("r1", "sfu-0", None, Duration::from_secs(60))
            .await
            .unwrap();
        let (status, body, _) =
            call(&router, "GET", "/v1/admin/shards", Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        let shard = &body["shards"][0];
        assert_eq!(shard["id"], "sfu-0");
        assert_eq!(shard["state"], "active");
        assert_eq!(shard["load"]["participants"], 7);
        assert_eq!(shard["capacity"]["max_rooms"], 10);
        assert_eq!(shard["free_participants"], 93);
        assert_eq!(shard["accepts_new_rooms"], true);
        assert_eq!(shard["pinned_rooms"], 1);
    }

    #[tokio::test]
    async fn drains_a_shard_and_refuses_unknown_ones() {
        let (router, registry) = app(Some("s3cret")).await;
        let (status, body, _) = call(
            &router,
            "POST",
            "/v1/admin/shards/sfu-0/drain",
            Some("bearer s3cret"),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["state"], "draining");
        let drain = registry
            .heartbeat(&shard("sfu-0"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(drain, "the shard learns it on its next heartbeat");
        let (_, body, _) = call(&router, "GET", "/v1/admin/shards", Some("Bearer s3cret")).await;
        assert_eq!(body["shards"][0]["state"], "draining");
        assert_eq!(body["shards"][0]["accepts_new_rooms"], false);

        let (status, body, _) = call(
            &router,
            "POST",
            "/v1/admin/shards/nope/drain",
            Some("Bearer s3cret"),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "shard_not_found");
    }

    #[tokio::test]
    async fn wrong_or_missing_token_is_401() {
        let (router, registry) = app(Some("s3cret")).await;
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
        ] {
            let (status, body, headers) = call(&router, "GET", "/v1/admin/shards", auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(body["error"]["code"], "admin_unauthorized");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
            let (status, _, _) = call(&router, "POST", "/v1/admin/shards/sfu-0/drain", auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let drain = registry
            .heartbeat(&shard("sfu-0"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(!drain, "an unauthorised drain changed nothing");
    }

    #[tokio::test]
    async fn status_shows_dependencies_to_admins_only() {
        struct Redis;
        #[async_trait::async_trait]
        impl crate::health::Dependency for Redis {
            fn name(&self) -> &'static str {
                "redis"
            }
            async fn check(&self) -> Result<(), String> {
                Err("Connection refused (os error 111)".into())
            }
        }
        let health = Health::new(vec![], vec![Arc::new(Redis)]);
        health.check_now().await;
        let router = crate::http::finish_router(status_router(health, Some("s3cret".into())));
        let (status, _, _) = call(&router, "GET", "/v1/admin/status", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body, _) =
            call(&router, "GET", "/v1/admin/status", Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["ready"], true, "{body}");
        let redis = &body["dependencies"][0];
        assert_eq!(redis["name"], "redis");
        assert_eq!(redis["up"], false);
        assert_eq!(redis["error"], "Connection refused (os error 111)");
        assert!(redis["checked_at"].as_u64().is_some());
    }

    #[tokio::test]
    async fn disabled_without_a_token() {
        for token in [None, Some("")] {
            let (router, _) = app(token).await;
            let (status, body, _) = call(&router, "GET", "/v1/admin/shards", Some("Bearer ")).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(body["error"]["code"], "not_found");
        }
    }
}
