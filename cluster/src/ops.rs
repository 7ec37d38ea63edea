//! Which paths a listener exposes. `/metrics` and `/v1/sfu/status` describe the process's
//! internals (load, rooms, error counts), so they are not for the Internet: with an ops
//! listener (`--ops-listen`) they are served there only; without one they need the admin
//! token on the main listener (and do not exist when no admin token is configured).
//! `/healthz` and `/readyz` stay on every listener (the kubelet probes them; readiness
//! names only this process's own gates, never a backend's error).

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::admin::{self, AdminToken};
use crate::http::HttpError;

/// Paths served only to operators.
pub const OPS_ONLY_PATHS: &[&str] = &["/metrics", "/v1/sfu/status"];

/// What the ops listener serves besides [`OPS_ONLY_PATHS`].
const OPS_SHARED_PATHS: &[&str] = &["/healthz", "/readyz", "/v1/admin/status"];

fn ops_only(path: &str) -> bool {
    OPS_ONLY_PATHS.contains(&path)
}

fn no_route(path: &str) -> Response {
    HttpError::not_found(format!("no route for {path}")).into_response()
}

/// Who may see the ops-only paths on the main listener.
#[derive(Clone)]
enum Public {
    /// An ops listener serves them; here they do not exist.
    Hidden,
    /// Callers with the admin token.
    AdminOnly(AdminToken),
}

/// `router` as the main (public) listener serves it.
pub fn public(router: Router, has_ops_listener: bool, admin_token: Option<&str>) -> Router {
    let rule = match (has_ops_listener, AdminToken::new(admin_token)) {
        (false, Some(token)) => Public::AdminOnly(token),
        _ => Public::Hidden,
    };
    router.layer(middleware::from_fn_with_state(rule, guard_public))
}

async fn guard_public(State(rule): State<Public>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !ops_only(path) {
        return next.run(request).await;
    }
    match rule {
        Public::Hidden => no_route(path),
        Public::AdminOnly(token) if token.permits(request.headers()) => next.run(request).await,
        Public::AdminOnly(_) => admin::unauthorized(),
    }
}

/// `router` as the ops listener serves it: the ops paths and the probes, nothing else.
pub fn ops(router: Router) -> Router {
    router.layer(middleware::from_fn(guard_ops))
}

async fn guard_ops(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if ops_only(path) || OPS_SHARED_PATHS.contains(&path) {
        next.run(request).await
    } else {
        no_route(path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route("/metrics", get(|| async { "m" }))
            .route("/v1/sfu/status", get(|| async { "s" }))
            .route("/readyz", get(|| async { "r" }))
            .route("/v1/signup", get(|| async { "api" }))
    }

    async fn status(router: &Router, path: &str, auth: Option<&str>) -> u16 {
        let mut request = Request::get(path);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn ops_paths_need_the_admin_token_or_the_ops_listener() {
        let guarded = public(app(), false, Some("s3cret"));
        for path in OPS_ONLY_PATHS {
            assert_eq!(status(&guarded, path, None).await, 401, "{path}");
            assert_eq!(status(&guarded, path, Some("Bearer nope")).await, 401);
            assert_eq!(status(&guarded, path, Some("Bearer s3cret")).await, 200);
        }
        assert_eq!(status(&guarded, "/readyz", None).await, 200);
        assert_eq!(status(&guarded, "/v1/signup", None).await, 200);

        for (has_ops, token) in [(false, None), (false, Some("")), (true, Some("s3cret"))] {
            let hidden = public(app(), has_ops, token);
            for path in OPS_ONLY_PATHS {
                assert_eq!(
                    status(&hidden, path, Some("Bearer s3cret")).await,
                    404,
                    "{path} {has_ops} {token:?}"
                );
            }
            assert_eq!(status(&hidden, "/v1/signup", None).await, 200);
        }

        let ops_side = ops(app());
        for path in OPS_ONLY_PATHS.iter().chain(["/readyz"].iter()) {
            assert_eq!(status(&ops_side, path, None).await, 200, "{path}");
        }
        assert_eq!(status(&ops_side, "/v1/signup", None).await, 404);
    }
}
