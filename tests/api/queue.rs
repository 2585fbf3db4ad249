//! The one queue engine: leases renewed while an attempt runs, and events that every
//! subscriber can name.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parley::domain::PartyKind;
use parley::domain::clock::{ManualClock, SharedClock};
use parley::domain::event::EventType;
use parley::store::Store;
use parley::store::queue::{Claim, DELIVERY_JOBS, QueueTable};
use parley::worker::{Job, Worker, WorkerSettings};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};

use crate::helpers::{spawn_app, spawn_app_with, spawn_app_with_clock};
use crate::peers::{HookReceiver, SmtpPeer, eventually};

/// A delivery job that holds every attempt until the test lets it go: a peer as slow as
/// the test wants, without waiting on the wall clock.
#[derive(Default)]
struct HeldJob {
    started: Notify,
    release: Notify,
    claims: Mutex<Vec<String>>,
}

impl Job for HeldJob {
    const QUEUE: QueueTable = DELIVERY_JOBS;
    const NAME: &'static str = "held";

    async fn handle(&self, claim: &Claim) -> anyhow::Result<()> {
        self.claims.lock().await.push(claim.id.clone());
        self.started.notify_one();
        self.release.notified().await;
        Ok(())
    }
}

fn worker(store: &Store, clock: SharedClock) -> Worker<HeldJob> {
    Worker::new(
        HeldJob::default(),
        store,
        clock,
        WorkerSettings {
            concurrency: 4,
            lease: Duration::from_millis(300),
            idle: Duration::from_millis(50),
        },
        Arc::new(Notify::new()),
    )
}

#[tokio::test]
async fn a_slow_attempt_keeps_its_lease_so_no_other_worker_claims_it() {
    let clock = ManualClock::at(1_700_000_000_000_000);
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap()),
            &json!({"messageType": "email", "subject": "Hello", "body": "Hello"}),
        )
        .await;
    assert_eq!(r.status(), 201);

    let a = Arc::new(worker(&app.store, clock.clone()));
    let slow = a.job();
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await.unwrap() }
    });
    slow.started.notified().await;
    let job_id = slow.claims.lock().await[0].clone();
    let (status, claimed_until) = app
        .store
        .queue()
        .queue_item(DELIVERY_JOBS, &job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, "running");
    let claimed_until = claimed_until.unwrap();

    // Time passes while the peer thinks; the worker renews its lease meanwhile.
    clock.advance(Duration::from_millis(250));
    let store = app.store.clone();
    let renewed = eventually(10, "the lease to be renewed", || {
        let (store, id) = (store.clone(), job_id.clone());
        async move {
            let (_, until) = store.queue().queue_item(DELIVERY_JOBS, &id).await.ok()??;
            until.filter(|u| *u > claimed_until)
        }
    })
    .await;
    assert!(renewed >= claimed_until + 250_000);

    // Past the first lease: without the renewal another worker would claim the job now.
    clock.advance(Duration::from_millis(200));
    let b = Arc::new(worker(&app.store, clock.clone()));
    let other = b.job();
    assert_eq!(b.run_once().await.unwrap(), 0, "a renewed lease holds");

    slow.release.notify_one();
    assert_eq!(first.await.unwrap(), 1);
    assert!(other.claims.lock().await.is_empty());

    // A lease that is not renewed (its worker died) runs out, and the job is due again.
    clock.advance(Duration::from_secs(1));
    let again = tokio::spawn({
        let b = b.clone();
        async move { b.run_once().await.unwrap() }
    });
    other.started.notified().await;
    other.release.notify_one();
    assert_eq!(again.await.unwrap(), 1);
    assert_eq!(other.claims.lock().await.as_slice(), [job_id]);
}

#[tokio::test]
async fn every_event_that_is_emitted_can_be_subscribed_to() {
    let receiver = HookReceiver::start().await;
    let app = spawn_app().await;
    let all: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
    let r = app
        .post(
            &app.admin.token,
            "/api/webhooks",
            &json!({"url": receiver.url, "events": all}),
        )
        .await;
    assert_eq!(r.status(), 201, "every event type is subscribable");

    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let path = format!("/api/cases/{case_id}");
    for (p, body) in [
        (
            format!("{path}/payments"),
            json!({"amount": "10.00", "paidAt": "2024-02-01"}),
        ),
        (format!("{path}/notes"), json!({"note": "called"})),
        (
            format!("{path}/messages"),
            json!({"messageType": "email", "subject": "Hi", "body": "Hello"}),
        ),
    ] {
        assert_eq!(
            app.post(&creditor.token, &p, &body).await.status(),
            201,
            "{p}"
        );
    }
    app.patch(&creditor.token, &path, &json!({"status": "disputed"}))
        .await;
    app.request(
        reqwest::Method::PUT,
        &creditor.token,
        &format!("{path}/communication-preferences"),
    )
    .json(&json!({"allowSms": false}))
    .send()
    .await
    .unwrap();
    app.deliver_due().await;
    let mail = format!(
        "From: debtor@example.com\r\nTo: case-{case_id}@localhost\r\nSubject: Re: Hi\r\n\r\nHello\r\n"
    );
    let r = app.post_mail(&app.admin.token, &mail).await;
    assert_eq!(r.status(), 201);
    app.dispatch_webhooks().await;

    let emitted: BTreeSet<String> = app
        .store
        .webhooks()
        .outbox_event_types()
        .await
        .unwrap()
        .into_iter()
        .collect();
    for e in &emitted {
        assert!(EventType::parse(e).is_ok(), "{e} is an event type");
    }
    let received: BTreeSet<String> = receiver
        .requests()
        .iter()
        .map(|(_, b)| {
            let v: Value = serde_json::from_str(b).unwrap();
            v["event"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        received, emitted,
        "every emitted event reached the subscriber"
    );
    for e in [
        "case.created",
        "payment.received",
        "note.created",
        "case.status_changed",
        "preferences.updated",
        "message.sent",
        "message.received",
    ] {
        assert!(emitted.contains(e), "{e} was emitted");
    }
}

#[tokio::test]
async fn a_slow_smtp_server_gets_one_copy() {
    let smtp = SmtpPeer::start().await;
    let url = smtp.url();
    let app = spawn_app_with(move |c| {
        c.mail.smtp_url = Some(parley::config::Secret::new(url));
        // A lease much shorter than the server's pause: without renewal another claim would
        // come while the first attempt still waits for the reply to the end of DATA.
        c.delivery.lease = Duration::from_secs(1);
    })
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap()),
            &json!({"messageType": "email", "to": "slow-3@example.com", "subject": "Hello", "body": "Hello"}),
        )
        .await;
    assert_eq!(r.status(), 201);

    let app = Arc::new(app);
    let first = tokio::spawn({
        let app = app.clone();
        async move { app.delivery.run_once().await.unwrap() }
    });
    let store = app.store.clone();
    eventually(10, "the job to be claimed", || {
        let store = store.clone();
        async move {
            let due = store.queue().next_due(DELIVERY_JOBS).await.ok()??;
            (due > parley::domain::time::now_micros()).then_some(())
        }
    })
    .await;
    // Meanwhile other claims keep coming, as another worker's would.
    let mut claimed_again = 0;
    while !first.is_finished() {
        claimed_again += app.delivery.run_once().await.unwrap();
        tokio::time::timeout(Duration::from_millis(100), std::future::pending::<()>())
            .await
            .ok();
    }
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(claimed_again, 0, "the job stayed with its worker");
    assert_eq!(smtp.wait_for(1).await.len(), 1);
    assert_eq!(app.deliver_due().await, 0);
    assert_eq!(smtp.messages().len(), 1, "one message, one copy");
}

#[tokio::test]
async fn many_deliveries_in_flight_share_a_bounded_number_of_smtp_connections() {
    let smtp = SmtpPeer::start().await;
    let url = smtp.url();
    // A delivery worker runs in the background, 80 deliveries in flight.
    let app = spawn_app_with(move |c| {
        c.mail.smtp_url = Some(parley::config::Secret::new(url));
        c.delivery.concurrency = 80;
    })
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let path = format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap());
    // Each message holds its connection for three seconds (the reply to the end of DATA):
    // all 48 are in flight together however slowly they are posted.
    for i in 0..48 {
        let r = app
            .post(
                &creditor.token,
                &path,
                &json!({"messageType": "email", "to": format!("slow-3-{i}@example.com"),
                        "subject": "Hello", "body": "Hello"}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    // The app's own worker (80 in flight) attempts them all at once.
    assert_eq!(smtp.wait_for(48).await.len(), 48, "every message went");
    let most = smtp.most_sessions();
    assert!(
        (2..=32).contains(&most),
        "48 deliveries at once opened {most} sessions at once; the relay sees at most 32"
    );
}

#[tokio::test]
async fn a_mail_server_down_for_longer_than_a_retry_step_still_gets_the_message() {
    // A port where nothing listens yet: the mail server is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clock = ManualClock::at(1_700_000_000_000_000);
    let app = spawn_app_with_clock(clock.clone(), move |c| {
        c.mail.smtp_url = Some(parley::config::Secret::new(format!(
            "smtp://127.0.0.1:{port}"
        )));
        c.delivery.retry_schedule = vec![Duration::from_secs(60); 3];
    })
    .await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let sent: Value = app
        .post(
            &creditor.token,
            &format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap()),
            &json!({"messageType": "email", "subject": "Hello", "body": "Hello"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = sent["messageId"].as_str().unwrap();
    assert_eq!(app.deliver_due().await, 1, "the first attempt fails");
    let attempts = app
        .store
        .queue()
        .delivery_attempts(&parley::domain::MessageId::parse(id).unwrap())
        .await
        .unwrap();
    assert_eq!(
        attempts[0].outcome.as_deref(),
        Some("retry"),
        "{attempts:?}"
    );

    // Still down a minute later (the second attempt), then up again.
    clock.advance(Duration::from_secs(75));
    assert_eq!(app.deliver_due().await, 1);
    let smtp = SmtpPeer::start_with(&["--port", &port.to_string()]).await;
    assert_eq!(
        app.deliver_due().await,
        0,
        "the next try waits for its step"
    );
    clock.advance(Duration::from_secs(75));
    assert_eq!(app.deliver_due().await, 1);
    assert_eq!(smtp.wait_for(1).await.len(), 1);
    let m: Value = app
        .get(&creditor.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["status"], "sent", "accepted work is not lost");
    let outcomes: Vec<Option<String>> = app
        .store
        .queue()
        .delivery_attempts(&parley::domain::MessageId::parse(id).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            Some("retry".into()),
            Some("retry".into()),
            Some("sent".into())
        ]
    );
}

/// A job whose peer answers at once and whose outcome takes as long as the test wants to
/// be written: it gives its slot back in between, as the real jobs do.
struct CommittingJob {
    claims: Mutex<Vec<String>>,
    committed: tokio::sync::Semaphore,
}

impl Job for CommittingJob {
    const QUEUE: QueueTable = DELIVERY_JOBS;
    const NAME: &'static str = "committing";

    async fn handle(&self, claim: &Claim) -> anyhow::Result<()> {
        self.claims.lock().await.push(claim.id.clone());
        parley::worker::free_slot();
        let _ = self.committed.acquire().await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_slot_is_free_while_the_outcome_is_written() {
    let app = spawn_app().await;
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    for i in 0..2 {
        let r = app
            .post(
                &creditor.token,
                &format!("/api/cases/{}/messages", case["caseId"].as_str().unwrap()),
                &json!({"messageType": "email", "subject": format!("Hello {i}"), "body": "Hello"}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    // One slot: without giving it back, the second item would wait for the first's outcome.
    let w = Arc::new(Worker::new(
        CommittingJob {
            claims: Mutex::new(Vec::new()),
            committed: tokio::sync::Semaphore::new(0),
        },
        &app.store,
        parley::domain::clock::system(),
        WorkerSettings {
            concurrency: 1,
            lease: Duration::from_secs(30),
            idle: Duration::from_millis(20),
        },
        Arc::new(Notify::new()),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(w.clone().run(stopped));
    let job = w.job();
    eventually(10, "both attempts, the first still writing", || async {
        (job.claims.lock().await.len() == 2).then_some(())
    })
    .await;
    let claims = job.claims.lock().await.clone();
    assert_ne!(claims[0], claims[1], "two items, not one twice");
    for id in &claims {
        let (status, _) = app
            .store
            .queue()
            .queue_item(DELIVERY_JOBS, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            status, "running",
            "still leased while its outcome is written"
        );
    }
    job.committed.add_permits(2);
    stop.send(true).unwrap();
    running.await.unwrap();
}
