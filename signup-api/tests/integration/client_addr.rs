//! Per-client limits behind a proxy: the API believes `X-Forwarded-For` only from its
//! trusted proxies. The "proxy" here is a client bound to 127.0.0.2 (every 127/8 address is
//! local on Linux); clients talking to the API directly come from 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use crate::common::{Db, TestApi, TestDb, random_hex};

async fn api() -> TestApi {
    let test_db = TestDb::new(Db::Sqlite);
    let mut config = test_db.config();
    // Two signups at once per client, then one a minute: the third is refused.
    config.signup_ip_per_min = 1;
    config.signup_ip_burst = 2;
    config.trusted_proxies = "127.0.0.2".parse().unwrap();
    TestApi::start(&config, None).await
}

fn from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .build()
        .unwrap()
}

/// Signs up a fresh email from `client` with `X-Forwarded-For: xff` (if any); the status.
async fn signup(api: &TestApi, client: &reqwest::Client, xff: Option<&str>) -> u16 {
    let mut request = client.post(api.url("/v1/accounts")).json(&json!({
        "email": format!("c-{}@example.com", random_hex()),
        "password": "correct horse battery",
        "display_name": "C",
    }));
    if let Some(xff) = xff {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_client_that_sends_its_own_chain_gets_no_fresh_budget() {
    let api = api().await;
    let direct = from([127, 0, 0, 1]);
    let statuses = [
        signup(&api, &direct, Some("198.51.100.1")).await,
        signup(&api, &direct, Some("198.51.100.2")).await,
        signup(&api, &direct, Some("198.51.100.3")).await,
        signup(&api, &direct, None).await,
    ];
    assert_eq!(
        statuses,
        [201, 201, 429, 429],
        "one budget: the socket address's"
    );
    api.stop().await;
}

#[tokio::test]
async fn behind_the_trusted_proxy_each_client_has_its_own_budget() {
    let api = api().await;
    let proxy = from([127, 0, 0, 2]);
    for client in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            assert_eq!(signup(&api, &proxy, Some(client)).await, 201, "{client}");
        }
        assert_eq!(signup(&api, &proxy, Some(client)).await, 429, "{client}");
    }
    // Whatever a client writes in front of the proxy's entry, it is keyed on that entry.
    for spoof in ["10.9.9.9", "198.51.100.77", "garbage"] {
        let chain = format!("{spoof}, 198.51.100.1");
        assert_eq!(signup(&api, &proxy, Some(&chain)).await, 429, "{chain}");
    }
    // IPv6 clients are keyed by their /64.
    assert_eq!(signup(&api, &proxy, Some("2001:db8:1:2::1")).await, 201);
    assert_eq!(
        signup(&api, &proxy, Some("[2001:db8:1:2::ff]:4711")).await,
        201
    );
    assert_eq!(signup(&api, &proxy, Some("2001:db8:1:2::7")).await, 429);
    assert_eq!(signup(&api, &proxy, Some("2001:db8:1:3::1")).await, 201);
    // The proxy's own requests without a chain are its own client.
    assert_eq!(signup(&api, &proxy, None).await, 201);
    api.stop().await;
}
