//! Issue 14, contacts, performed as attacks: probing which emails have accounts, watching
//! the presence of someone who never agreed, flooding requests; and the migration that turns
//! one-sided contacts into requests. On PostgreSQL and SQLite.

use serde_json::{Value, json};
use surge_signup_api::store;

use crate::common::{Db, TestApi, TestDb, assert_error, random_hex};

async fn ask(api: &TestApi, token: &str, email: &str) -> (reqwest::StatusCode, Value) {
    api.post("/v1/contacts", json!({"email": email}), Some(token))
        .await
}

async fn delete(api: &TestApi, path: &str, token: &str) -> reqwest::StatusCode {
    api.client
        .delete(api.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn contacts_need_acceptance_and_reveal_nothing(db: Db) {
    let test_db = TestDb::new(db);
    let mut config = test_db.config();
    config.max_pending_contact_requests = 3;
    config.contact_requests_per_account_per_min = 1;
    config.contact_requests_per_account_burst = 10;
    let api = TestApi::start(&config, None).await;
    let tag = random_hex();
    let email = |name: &str| format!("{name}-{tag}@example.com");
    let (alice_id, alice) = api.user(&email("alice")).await;
    let (bob_id, bob) = api.user(&email("bob")).await;
    let (_, carol) = api.user(&email("carol")).await;

    // The probe: an email with an account and one without get the same answer.
    let real = ask(&api, &alice, &email("bob")).await;
    let ghost = ask(&api, &alice, &email("ghost")).await;
    assert_eq!(real.0, 202, "{}", real.1);
    assert_eq!(ghost.0, 202, "{}", ghost.1);
    assert_eq!(real.1, json!({"email": email("bob"), "state": "requested"}));
    assert_eq!(
        ghost.1,
        json!({"email": email("ghost"), "state": "requested"})
    );
    // Asking again is the same answer, and stores nothing more.
    assert_eq!(ask(&api, &alice, &email("ghost")).await, ghost);
    assert_error(
        &ask(&api, &alice, &email("alice")).await,
        422,
        "cannot_add_self",
    );

    // Until bob accepts, alice sees nothing of him.
    let res = api
        .client
        .put(api.url("/v1/presence"))
        .bearer_auth(&bob)
        .json(&json!({"status": "online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, list) = api
        .get(&format!("/v1/presence?ids={bob_id}"), Some(&alice))
        .await;
    assert_eq!(list, json!({"presence": []}));
    let (_, mine) = api.get("/v1/contacts", Some(&alice)).await;
    assert_eq!(mine["contacts"], json!([]));
    let outgoing: Vec<&str> = mine["outgoing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["email"].as_str().unwrap())
        .collect();
    assert_eq!(outgoing.len(), 2);
    assert!(outgoing.contains(&email("bob").as_str()));
    assert!(outgoing.contains(&email("ghost").as_str()));

    // Bob sees the request, with who sent it, and accepts.
    let (_, his) = api.get("/v1/contacts", Some(&bob)).await;
    assert_eq!(his["incoming"][0]["user_id"], alice_id.as_str());
    assert_eq!(his["incoming"][0]["email"], email("alice"));
    assert_error(
        &api.post("/v1/contacts/requests/nobody/accept", json!({}), Some(&bob))
            .await,
        404,
        "contact_request_not_found",
    );
    // Carol cannot accept a request that was not sent to her.
    assert_error(
        &api.post(
            &format!("/v1/contacts/requests/{alice_id}/accept"),
            json!({}),
            Some(&carol),
        )
        .await,
        404,
        "contact_request_not_found",
    );
    let (status, contact) = api
        .post(
            &format!("/v1/contacts/requests/{alice_id}/accept"),
            json!({}),
            Some(&bob),
        )
        .await;
    assert_eq!(status, 200, "{contact}");
    let (_, list) = api
        .get(&format!("/v1/presence?ids={bob_id}"), Some(&alice))
        .await;
    assert_eq!(
        list,
        json!({"presence": [{"user_id": bob_id, "status": "online"}]})
    );
    let (_, his) = api.get("/v1/contacts", Some(&bob)).await;
    assert_eq!(his["contacts"][0]["user_id"], alice_id.as_str());
    assert_eq!(his["incoming"], json!([]));
    // Carol, who is nobody's contact, still sees nothing of either.
    let (_, list) = api
        .get(
            &format!("/v1/presence?ids={bob_id},{alice_id}"),
            Some(&carol),
        )
        .await;
    assert_eq!(list, json!({"presence": []}));

    // Declining: carol asks bob, bob declines; carol's request is gone, no contact made.
    assert_eq!(ask(&api, &carol, &email("bob")).await.0, 202);
    let (_, his) = api.get("/v1/contacts", Some(&bob)).await;
    let carol_id = his["incoming"][0]["user_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/contacts/requests/{carol_id}");
    assert_eq!(delete(&api, &path, &bob).await, 204);
    assert_eq!(delete(&api, &path, &bob).await, 404);
    let (_, hers) = api.get("/v1/contacts", Some(&carol)).await;
    assert_eq!(hers["contacts"], json!([]));

    // Two who ask each other are contacts at once.
    let (_, dave) = api.user(&email("dave")).await;
    assert_eq!(ask(&api, &dave, &email("carol")).await.0, 202);
    assert_eq!(ask(&api, &carol, &email("dave")).await.0, 202);
    let (_, hers) = api.get("/v1/contacts", Some(&carol)).await;
    assert_eq!(hers["contacts"][0]["email"], email("dave"));
    assert_eq!(hers["outgoing"], json!([]));
    assert_eq!(hers["incoming"], json!([]));

    // The pending cap (3): alice has 1 (ghost); two more fill it, the next is 409 whether
    // or not its email has an account; repeating a pending one is still fine.
    assert_eq!(ask(&api, &alice, &email("ghost2")).await.0, 202);
    assert_eq!(ask(&api, &alice, &email("ghost3")).await.0, 202);
    assert_error(
        &ask(&api, &alice, &email("ghost4")).await,
        409,
        "too_many_contact_requests",
    );
    assert_error(
        &ask(&api, &alice, &email("carol")).await,
        409,
        "too_many_contact_requests",
    );
    assert_eq!(ask(&api, &alice, &email("ghost3")).await.0, 202);
    // Withdrawing one makes room.
    let path = format!("/v1/contacts/outgoing/{}", email("ghost3"));
    assert_eq!(delete(&api, &path, &alice).await, 204);
    assert_eq!(delete(&api, &path, &alice).await, 404);
    assert_eq!(ask(&api, &alice, &email("ghost4")).await.0, 202);
    // The look-up rate (burst 10, then 1 a minute): alice has used 9 (refusals count); one
    // more passes, then she is refused before any look-up.
    assert_eq!(ask(&api, &alice, &email("ghost4")).await.0, 202);
    let limited = api
        .client
        .post(api.url("/v1/contacts"))
        .bearer_auth(&alice)
        .json(&json!({"email": email("ghost5")}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    // Removing: either side ends it for both, and presence is hidden again.
    assert_eq!(
        delete(&api, &format!("/v1/contacts/{bob_id}"), &alice).await,
        204
    );
    assert_eq!(
        delete(&api, &format!("/v1/contacts/{bob_id}"), &alice).await,
        204,
        "removing is idempotent"
    );
    let (_, his) = api.get("/v1/contacts", Some(&bob)).await;
    assert_eq!(his["contacts"], json!([]));
    let (_, list) = api
        .get(&format!("/v1/presence?ids={bob_id}"), Some(&alice))
        .await;
    assert_eq!(list, json!({"presence": []}));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_requests_on_postgres() {
    contacts_need_acceptance_and_reveal_nothing(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_requests_on_sqlite() {
    contacts_need_acceptance_and_reveal_nothing(Db::Sqlite).await;
}

/// The migration: contacts added one-sidedly before requests existed become pending
/// requests; pairs who had added each other stay contacts.
async fn one_sided_contacts_become_requests(db: Db) {
    let test_db = TestDb::new(db);
    let old_schema = include_str!("../../migrations/0001_accounts.sql");
    let seed = format!(
        "{old_schema}
        CREATE TABLE IF NOT EXISTS surge_migrations (version BIGINT PRIMARY KEY);
        INSERT INTO surge_migrations (version) VALUES (1);
        INSERT INTO accounts VALUES ('a', 'a@example.com', 'A', 'x', 1);
        INSERT INTO accounts VALUES ('b', 'b@example.com', 'B', 'x', 1);
        INSERT INTO accounts VALUES ('c', 'c@example.com', 'C', 'x', 1);
        INSERT INTO contacts VALUES ('a', 'b', 5);
        INSERT INTO contacts VALUES ('b', 'a', 6);
        INSERT INTO contacts VALUES ('a', 'c', 7);"
    );
    match db {
        Db::Sqlite => {
            let path = test_db.url.trim_start_matches("sqlite://");
            std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(seed))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Db::Postgres => {
            let schema = test_db.schema.clone().unwrap();
            let pool = sqlx::PgPool::connect(&test_db.url).await.unwrap();
            let sql = format!("CREATE SCHEMA {schema}; SET search_path TO {schema}; {seed}");
            let mut conn = pool.acquire().await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .unwrap();
            drop(conn);
            pool.close().await;
        }
    }
    let store = store::connect(&test_db.url, test_db.schema.as_deref(), 2)
        .await
        .unwrap();
    let ids = |accounts: Vec<store::Account>| -> Vec<String> {
        accounts.into_iter().map(|a| a.id).collect()
    };
    assert_eq!(ids(store.contacts("a").await.unwrap()), vec!["b"]);
    assert_eq!(ids(store.contacts("b").await.unwrap()), vec!["a"]);
    assert!(store.contacts("c").await.unwrap().is_empty());
    let incoming = store.incoming_requests("c@example.com").await.unwrap();
    assert_eq!(incoming.len(), 1);
    assert_eq!(incoming[0].from.id, "a");
    assert_eq!(incoming[0].created_at, 7);
    assert_eq!(
        store.outgoing_requests("a").await.unwrap()[0].email,
        "c@example.com"
    );
    // Applied once: connecting again changes nothing.
    drop(store);
    let store = store::connect(&test_db.url, test_db.schema.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(ids(store.contacts("a").await.unwrap()), vec!["b"]);
    assert_eq!(store.outgoing_requests("a").await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_contacts_migration_on_postgres() {
    one_sided_contacts_become_requests(Db::Postgres).await;
}

#[tokio::test]
async fn the_contacts_migration_on_sqlite() {
    one_sided_contacts_become_requests(Db::Sqlite).await;
}
