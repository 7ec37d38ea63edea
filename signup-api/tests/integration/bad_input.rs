//! Every kind of bad input gets a JSON error with a stable code, and writes nothing.

use serde_json::{Value, json};

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex};

async fn raw(
    api: &TestApi,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (reqwest::StatusCode, Value) {
    let res = api
        .client
        .post(api.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_signups_are_refused_and_write_nothing() {
    let test_db = TestDb::new(Db::Sqlite);
    let api = TestApi::start(&test_db.config(), None).await;
    let taken = format!("taken-{}@example.com", random_hex());
    assert_eq!(api.signup(&taken).await.0, 201);
    let j = "application/json";
    assert_error(
        &raw(&api, "/v1/accounts", j, b"{not json".to_vec()).await,
        400,
        "malformed_json",
    );
    assert_error(
        &raw(&api, "/v1/accounts", j, br#"{"email":"a@b.co"}"#.to_vec()).await,
        422,
        "invalid_body",
    );
    assert_error(
        &raw(
            &api,
            "/v1/accounts",
            j,
            br#"{"email":1,"password":"0123456789","display_name":"x"}"#.to_vec(),
        )
        .await,
        422,
        "invalid_body",
    );
    assert_error(
        &raw(&api, "/v1/accounts", "text/plain", b"{}".to_vec()).await,
        415,
        "unsupported_media_type",
    );
    let mut huge = br#"{"email":"a@b.co","password":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend(br#"","display_name":"x"}"#);
    assert_error(
        &raw(&api, "/v1/accounts", j, huge).await,
        413,
        "payload_too_large",
    );
    let signup = |email: &str, password: &str, name: &str| json!({"email": email, "password": password, "display_name": name});
    let cases = [
        (
            signup("not-an-email", "correct horse battery", "X"),
            "invalid_email",
        ),
        (
            signup("ad\u{0430}@example.com", "correct horse battery", "X"),
            "invalid_email",
        ),
        (
            signup("ada\u{200B}@example.com", "correct horse battery", "X"),
            "invalid_email",
        ),
        (signup("ada@example.com", "short", "X"), "weak_password"),
        (
            signup("ada@example.com", &"p".repeat(1025), "X"),
            "password_too_long",
        ),
        (
            signup("ada@example.com", "correct horse battery", "   "),
            "invalid_display_name",
        ),
        (
            signup(
                "ada@example.com",
                "correct horse battery",
                "evil\u{202E}txt.exe",
            ),
            "invalid_display_name",
        ),
        (
            signup("ada@example.com", "correct horse battery", "a\u{0007}b"),
            "invalid_display_name",
        ),
        (
            signup("ada@example.com", "correct horse battery", &"n".repeat(65)),
            "invalid_display_name",
        ),
    ];
    for (body, code) in cases {
        let got = api.post("/v1/accounts", body.clone(), None).await;
        assert_error(&got, 422, code);
    }
    // A duplicate, whatever its case and spacing.
    assert_error(
        &api.signup(&format!("  {}  ", taken.to_uppercase())).await,
        409,
        "email_taken",
    );
    let res = api
        .client
        .post(api.url("/v1/accounts"))
        .header("Idempotency-Key", "x".repeat(200))
        .json(&signup("fresh@example.com", "correct horse battery", "X"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(api.accounts().await, 1);
    api.stop().await;
}

#[tokio::test]
async fn forged_and_expired_sessions_are_refused() {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    config.session_ttl_secs = 0; // sessions are born expired
    let api = TestApi::start(&config, None).await;
    let email = format!("exp-{}@example.com", random_hex());
    let (_, token) = api.user(&email).await;
    assert_error(
        &api.get("/v1/me", Some(&token)).await,
        401,
        "invalid_session",
    );
    assert_error(&api.get("/v1/me", None).await, 401, "invalid_session");
    let store = api.api.as_ref().unwrap().store();
    let now = i64::try_from(surge_cluster::token::unix_now()).unwrap();
    assert_eq!(
        surge_signup_api::store::purge_expired(
            store.as_ref(),
            now,
            std::time::Duration::from_secs(3600)
        )
        .await
        .unwrap()
        .sessions,
        1
    );
    for forged in [
        "x",
        &"A".repeat(43),
        "eyJhbGciOiJub25lIn0.e30.",
        &"%".repeat(10_000),
    ] {
        assert_error(
            &api.get("/v1/me", Some(forged)).await,
            401,
            "invalid_session",
        );
    }
    let res = api
        .client
        .get(api.url("/v1/me"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Logins with malformed input are plain invalid credentials.
    for body in [
        json!({"email": "nope", "password": "whatever12"}),
        json!({"email": email, "password": ""}),
        json!({"email": email, "password": "p".repeat(2000)}),
    ] {
        assert_error(
            &api.post("/v1/sessions", body, None).await,
            401,
            "invalid_credentials",
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn the_web_client_and_openapi_are_served() {
    let test_db = TestDb::new(Db::Sqlite);
    let api = TestApi::start(&test_db.config(), None).await;
    for path in ["/", "/rooms/abc123"] {
        let res = api.client.get(api.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    let res = api
        .client
        .get(api.url("/static/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let (status, doc) = api.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/accounts",
        "/v1/sessions",
        "/v1/sessions/current",
        "/v1/me",
        "/v1/presence",
        "/v1/presence/stream",
        "/v1/presence/tickets",
        "/v1/contacts",
        "/v1/contacts/{user_id}",
        "/v1/contacts/requests/{user_id}/accept",
        "/v1/contacts/requests/{user_id}",
        "/v1/contacts/outgoing/{email}",
        "/v1/rooms",
        "/v1/rooms/{id}",
        "/v1/rooms/{id}/participants",
        "/v1/rooms/{id}/participants/{participant}",
        "/v1/ice-servers",
        "/v1/calls",
        "/v1/calls/recent",
        "/v1/calls/{id}/accept",
        "/v1/calls/{id}/decline",
        "/v1/calls/{id}/cancel",
        "/v1/calls/{id}/hangup",
        "/v1/calls/{id}/members",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    let (status, body) = api.get("/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    api.stop().await;
}
