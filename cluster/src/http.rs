//! HTTP conventions shared by every Surge listener: one JSON error shape with a stable
//! `code`, a JSON extractor whose rejections use that shape, JSON 404/405, a body-size
//! limit, liveness and readiness routes, Prometheus metrics, and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::ErrorCode;
use crate::health::Health;
use crate::listener::ListenerConfig;

/// Bodies larger than this are refused with `413 payload_too_large` before any parsing.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// An HTTP error as every Surge listener reports it:
/// `{"error": {"code": "...", "message": "..."}}`, plus `Retry-After` when the client
/// should come back later. `code` is stable and machine-readable; `message` is for people.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl HttpError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After`, rounded up to whole seconds (at least one).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// A 5xx whose details are logged here and never sent to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; it has been logged",
        )
    }

    pub fn unavailable(code: ErrorCode, message: impl Into<String>, retry: Duration) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).with_retry_after(retry)
    }
}

/// Whole seconds for `Retry-After`, never zero (a zero invites an immediate retry storm).
pub fn retry_after_secs(after: Duration) -> u64 {
    after.as_millis().div_ceil(1000).max(1) as u64
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorFields {
                code: self.code.as_str(),
                message: &self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(after)),
            );
        }
        response
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for HttpError {}

/// A JSON body extractor and response whose rejections are [`HttpError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> HttpError {
    match rejection {
        JsonRejection::JsonDataError(e) => HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidBody,
            format!(
                "the JSON body does not have the expected fields: {}",
                e.body_text()
            ),
        ),
        JsonRejection::JsonSyntaxError(_) => HttpError::bad_request(
            ErrorCode::MalformedJson,
            "the request body is not valid JSON",
        ),
        JsonRejection::MissingJsonContentType(_) => HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected a body with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        other => HttpError::bad_request(ErrorCode::InvalidBody, other.body_text()),
    }
}

/// `201 Created` with an SDP answer and the new participant's `Location` (the WHIP-style
/// join answer, from a shard and from the API that relays it).
pub fn sdp_created(answer: impl Into<axum::body::Body>, location: &str) -> Response {
    let mut response = (StatusCode::CREATED, answer.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    response
}

/// `415 unsupported_media_type` unless the request says its body is an SDP offer
/// (`Content-Type: application/sdp`): the API's join and restart and the shard's check it alike.
pub fn require_sdp(headers: &axum::http::HeaderMap) -> Result<(), HttpError> {
    let is_sdp = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/sdp"));
    if is_sdp {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected a body with Content-Type: application/sdp (the SDP offer)",
        ))
    }
}

/// The error for a body over [`DEFAULT_BODY_LIMIT`].
pub fn payload_too_large() -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than {DEFAULT_BODY_LIMIT} bytes"),
    )
}

/// `/healthz` (the process answers), `/readyz` (it can serve: started and not draining;
/// never a backend's health, see [`crate::health`]) and `/metrics` (Prometheus text).
pub fn ops_routes(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(health): State<Health>) -> Response {
    match health.ready() {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(closed) => HttpError::unavailable(
            ErrorCode::NotReady,
            format!("not serving: {}", closed.join("; ")),
            Duration::from_secs(1),
        )
        .into_response(),
    }
}

async fn metrics_text() -> Response {
    match crate::telemetry::metrics_handle() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => HttpError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::MetricsDisabled,
            "no metrics recorder is installed in this process",
        )
        .into_response(),
    }
}

async fn not_found(uri: axum::http::Uri) -> HttpError {
    HttpError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Wraps a complete router with what every listener has: JSON 404 and 405, the body-size
/// limit, and a request span carrying the matched route.
pub fn finish_router(router: Router) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str)
                .unwrap_or("unmatched");
            tracing::info_span!("http", method = %req.method(), route)
        }))
}

/// Binds a TCP listener, turning failure into one clear line.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves `router` with the default [`ListenerConfig`] timeouts and process-wide cap, but
/// no per-address cap (in-process tests flood from one loopback address; the binary
/// applies its configured cap), until `shutdown` is cancelled, then lets in-flight
/// requests finish for up to `grace` before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    crate::listener::serve(
        listener,
        router,
        &ListenerConfig {
            max_connections_per_ip: 0,
            ..ListenerConfig::default()
        },
        shutdown,
        grace,
    )
    .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(%e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(%e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[derive(serde::Deserialize, Serialize)]
    struct Echo {
        n: u32,
    }

    async fn echo(ApiJson(e): ApiJson<Echo>) -> ApiJson<Echo> {
        ApiJson(e)
    }

    fn app() -> Router {
        finish_router(
            Router::new()
                .route("/echo", post(echo))
                .merge(ops_routes(Health::new(vec![], vec![]))),
        )
    }

    async fn call(req: Request) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
        let res = app().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or_default(),
            headers,
        )
    }

    fn json_post(body: impl Into<Body>) -> Request {
        Request::post("/echo")
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap()
    }

    #[tokio::test]
    async fn errors_have_one_json_shape() {
        let cases = [
            (json_post("{not json"), 400, "malformed_json"),
            (json_post(r#"{"n":"x"}"#), 422, "invalid_body"),
            (json_post("{}"), 422, "invalid_body"),
            (
                Request::post("/echo")
                    .body(Body::from(r#"{"n":1}"#))
                    .unwrap(),
                415,
                "unsupported_media_type",
            ),
            (
                json_post(vec![b' '; DEFAULT_BODY_LIMIT + 10]),
                413,
                "payload_too_large",
            ),
            (
                Request::get("/nope").body(Body::empty()).unwrap(),
                404,
                "not_found",
            ),
            (
                Request::get("/echo").body(Body::empty()).unwrap(),
                405,
                "method_not_allowed",
            ),
        ];
        for (req, status, code) in cases {
            let (got, body, _) = call(req).await;
            assert_eq!(got.as_u16(), status, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        let (status, body, _) = call(json_post(r#"{"n":7}"#)).await;
        assert_eq!(status, 200);
        assert_eq!(body["n"], 7);
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[tokio::test]
    async fn readiness_follows_the_gates_only() {
        struct Down;
        #[async_trait::async_trait]
        impl crate::health::Dependency for Down {
            fn name(&self) -> &'static str {
                "database"
            }
            async fn check(&self) -> Result<(), String> {
                Err("connection refused".into())
            }
        }
        let draining = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = draining.clone();
        let gate: crate::health::Gate = std::sync::Arc::new(move || {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                Err("draining".to_owned())
            } else {
                Ok(())
            }
        });
        let health = Health::new(vec![gate], vec![std::sync::Arc::new(Down)]);
        health.check_now().await;
        let app = ops_routes(health);
        let get = |path: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            get("/readyz").await.status(),
            200,
            "a dead backend is not a reason to leave the Service"
        );
        draining.store(true, std::sync::atomic::Ordering::SeqCst);
        let res = get("/readyz").await;
        assert_eq!(res.status(), 503);
        assert!(res.headers().contains_key("retry-after"));
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "not_ready");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("draining")
        );
        assert_eq!(get("/healthz").await.status(), 200);
    }
}

#[cfg(test)]
mod serve_tests {
    use super::*;

    /// A request that is running when shutdown starts still gets its answer, and the
    /// server stops by itself afterwards.
    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish() {
        let router = finish_router(Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        ));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            shutdown.clone(),
            Duration::from_secs(10),
        ));
        let request = tokio::spawn(async move {
            reqwest::get(format!("http://{addr}/slow"))
                .await?
                .text()
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.cancel();
        assert_eq!(request.await.unwrap().unwrap(), "done");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops after in-flight requests end")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_port_in_use_is_one_clear_error() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {addr}")),
            "{err}"
        );
    }
}
