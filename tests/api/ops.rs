use parley::domain::PartyKind;
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ready");
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.store.close().await;
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(r, 503, "not_ready").await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    app.get(
        &creditor.token,
        &format!("/api/cases/{}", case["caseId"].as_str().unwrap()),
    )
    .await;
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"parley_http_requests_total{method="GET",route="/api/cases/{caseId}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"parley_http_request_duration_seconds_count{method="POST",route="/api/cases"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains(case["caseId"].as_str().unwrap()),
        "ids never become labels"
    );
}

/// What the app serves at `path` without a token, as text.
async fn text_at(app: &crate::helpers::TestApp, path: &str) -> String {
    app.client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The served document passes `openapi-spec-validator` (from PyPI, installed by the test
/// command): unique operation ids, resolvable references, a valid 3.1 document.
#[tokio::test]
async fn the_openapi_document_passes_the_specifications_validator() {
    let app = spawn_app().await;
    let doc = text_at(&app, "/openapi.json").await;
    let path = app.dir.path().join("openapi.json");
    std::fs::write(&path, doc).unwrap();
    let out = tokio::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn openapi_document_lists_every_api_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/cases", &["get", "post"][..]),
        ("/api/cases/{caseId}", &["get", "patch"]),
        ("/api/cases/{caseId}/payments", &["get", "post"]),
        ("/api/cases/{caseId}/deadlines", &["get", "post"]),
        ("/api/cases/{caseId}/notes", &["get", "post"]),
        ("/api/cases/{caseId}/audit-log", &["get"]),
    ] {
        for m in methods {
            assert!(
                paths[path].get(*m).is_some(),
                "{m} {path} missing from the OpenAPI document"
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn docs_page_and_its_assets_are_served_locally() {
    let app = spawn_app().await;
    let page = text_at(&app, "/docs").await;
    assert!(page.contains("/openapi.json"));
    assert!(!page.contains("https://"), "no CDN");
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"] {
        let r = app
            .client
            .get(format!("{}{asset}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap().len() > 10_000, "{asset}");
    }
}
