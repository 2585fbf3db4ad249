//! Hostile clients against the HTTP server: slow headers, too many connections, slow bodies.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_app_with;

/// Reads until the server closes the connection (or answers), failing after `secs`.
pub(crate) async fn closed_within(stream: &mut TcpStream, secs: u64) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "still open after {secs} s");
    String::from_utf8_lossy(&got).into_owned()
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn clients_that_trickle_their_headers_are_disconnected() {
    let app = spawn_app_with(|c| c.http.header_timeout = Duration::from_secs(1)).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr(&app.base)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\nX-Slow: 1")
            .await
            .unwrap();
        slow.push(s);
    }
    for s in &mut slow {
        let answer = closed_within(s, 10).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    // The server still answers everyone else.
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn connections_over_the_bound_are_closed_at_once() {
    let app = spawn_app_with(|c| c.http.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr(&app.base)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    let mut fifth = TcpStream::connect(addr(&app.base)).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\n\r\n")
        .await;
    assert_eq!(
        closed_within(&mut fifth, 10).await,
        "",
        "refused unanswered"
    );

    // A held connection that goes away frees its place.
    drop(held.pop());
    let base = app.base.clone();
    crate::peers::eventually(10, "a free connection slot", || {
        let base = base.clone();
        async move {
            let mut s = TcpStream::connect(addr(&base)).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let answer = closed_within(&mut s, 10).await;
            answer.starts_with("HTTP/1.1 200").then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_body_that_never_arrives_ends_in_408() {
    let app = spawn_app_with(|c| c.http.request_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(addr(&app.base)).await.unwrap();
    let head = format!(
        "POST /api/cases HTTP/1.1\r\nHost: parley\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"debtor\":",
        app.admin.token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_within(&mut s, 10).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}
