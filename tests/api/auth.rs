use parley::domain::PartyKind;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_get_401() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/api/cases", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_problem(r, 401, "unauthorized").await;
    let r = app
        .client
        .get(format!("{}/api/cases", app.base))
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
    assert_problem(
        app.get("pk_not-a-real-token", "/api/cases").await,
        401,
        "unauthorized",
    )
    .await;
    let r = app
        .client
        .get(format!("{}/api/cases", app.base))
        .header("Authorization", "Bearer")
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/api/cases", app.base))
        .header("Authorization", format!("bearer {}", app.admin.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn each_token_is_rate_limited_with_retry_after() {
    let app = spawn_app_with(|c| c.http.rate_limit_per_minute = 3).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    for _ in 0..3 {
        assert_eq!(app.get(&creditor.token, "/api/cases").await.status(), 200);
    }
    let r = app.get(&creditor.token, "/api/cases").await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_problem(r, 429, "rate_limited").await;
    assert_eq!(
        app.get(&app.admin.token, "/api/cases").await.status(),
        200,
        "other tokens are not affected"
    );
}

#[tokio::test]
async fn guessing_tokens_is_slowed_down_per_client_address() {
    let app = spawn_app().await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = app
            .client
            .get(format!("{}/api/cases", app.base))
            .bearer_auth(format!("pk_guess{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(
                r.headers().contains_key("retry-after"),
                "says when to come back"
            );
        }
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[30..].iter().all(|s| *s == 429), "{statuses:?}");
    // The address is held off for a while, whatever token it shows.
    let r = app
        .client
        .get(format!("{}/api/cases", app.base))
        .bearer_auth(&app.admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

/// A send takes its party from the tokens the process verified before and checks the token in
/// its read of the case: a token revoked or expired elsewhere since (another process, the
/// CLI) is 401 on the next send, whatever else the request gets wrong.
#[tokio::test]
async fn a_send_refuses_a_token_revoked_or_expired_since_it_was_last_used() {
    let app = spawn_app().await;
    let email = serde_json::json!({"messageType": "email", "subject": "Hi", "body": "Text"});
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let messages = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());
    let elsewhere = format!("/api/cases/{}/messages", uuid::Uuid::new_v4());
    let token_id = app.actor(&creditor).await.token_id;
    let send = |path: &str, key: Option<&str>, body: Option<&str>| {
        let mut r = app
            .request(reqwest::Method::POST, &creditor.token, path)
            .header("content-type", "application/json");
        if let Some(key) = key {
            r = r.header("Idempotency-Key", key.to_string());
        }
        r.body(body.map_or_else(|| email.to_string(), str::to_string))
    };
    assert_eq!(
        send(&messages, Some("first"), None)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    for change in [
        "UPDATE tokens SET revoked_at = 1 WHERE id = $1",
        "UPDATE tokens SET expires_at = 1 WHERE id = $1",
    ] {
        // A plain send, a replay of an earlier key, a case the party cannot see, a body that
        // does not parse.
        for probe in [
            send(&messages, None, None),
            send(&messages, Some("first"), None),
            send(&elsewhere, None, None),
            send(&messages, None, Some("{")),
        ] {
            let valid = "UPDATE tokens SET revoked_at = NULL, expires_at = NULL WHERE id = $1";
            app.store
                .subjects()
                .execute_on_row(valid, &token_id)
                .await
                .unwrap();
            // The process verifies the token once more, then it changes behind its back, as
            // another process would change it.
            assert_eq!(
                send(&messages, None, None).send().await.unwrap().status(),
                201
            );
            app.store
                .subjects()
                .execute_on_row(change, &token_id)
                .await
                .unwrap();
            assert_problem(probe.send().await.unwrap(), 401, "unauthorized").await;
        }
    }
}

/// A token over its rate limit and revoked since it was last verified is 401, not 429.
#[tokio::test]
async fn a_revoked_token_over_its_limit_is_401_on_a_send() {
    let app = spawn_app_with(|c| c.http.rate_limit_per_minute = 2).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let messages = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());
    let email = serde_json::json!({"messageType": "email", "subject": "Hi", "body": "Text"});
    assert_eq!(
        app.post(&creditor.token, &messages, &email).await.status(),
        201
    );
    assert_problem(
        app.post(&creditor.token, &messages, &email).await,
        429,
        "rate_limited",
    )
    .await;
    let token_id = app.actor(&creditor).await.token_id;
    app.store
        .subjects()
        .execute_on_row("UPDATE tokens SET revoked_at = 1 WHERE id = $1", &token_id)
        .await
        .unwrap();
    assert_problem(
        app.post(&creditor.token, &messages, &email).await,
        401,
        "unauthorized",
    )
    .await;
}
