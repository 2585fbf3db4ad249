//! The history's monthly partitions on PostgreSQL (`store::partitions`): rows land in their
//! month, rows that waited in the DEFAULT partition move into their month when it is made, a
//! busy lock leaves the month for the next round, and the history retention drops a month
//! whole. SQLite keeps one table each.

use std::time::Duration;

use parley::domain::PartyKind;
use parley::domain::time::now_micros;
use parley::store::partitions::AHEAD;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::helpers::{Party, TestApp, spawn_app};

const DAY: i64 = 86_400_000_000;

/// The partition of each row of the history a message left: `table -> partitions`.
async fn homes(conn: &mut PgConnection, message_id: &str, case_id: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT 'message_events', CAST(tableoid::regclass AS TEXT) FROM message_events WHERE message_id = $1 \
         UNION ALL SELECT 'job_attempts', CAST(a.tableoid::regclass AS TEXT) FROM job_attempts a \
           JOIN jobs j ON j.id = a.job_id WHERE j.ref_id = $1 \
         UNION ALL SELECT 'audit_log', CAST(tableoid::regclass AS TEXT) FROM audit_log WHERE case_id = $2 \
         ORDER BY 1, 2",
    )
    .bind(message_id)
    .bind(case_id)
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

/// SQLite keeps one table each: nothing to partition.
fn on_sqlite(app: &TestApp) -> bool {
    app.config
        .storage
        .database_url
        .expose()
        .starts_with("sqlite")
}

/// `table_YYYY_MM` of the month `at` (microseconds) falls in.
fn month_of(table: &str, at: i64) -> String {
    month_after(table, at, 0)
}

/// `table_YYYY_MM` of the `n`th month after the one `at` falls in.
fn month_after(table: &str, at: i64, n: u32) -> String {
    use chrono::Datelike;
    let first = parley::domain::time::from_micros(at)
        .date_naive()
        .with_day(1)
        .unwrap();
    let month = first.checked_add_months(chrono::Months::new(n)).unwrap();
    format!("{table}_{}", month.format("%Y_%m"))
}

/// A month's partition bounds as PostgreSQL states them.
async fn bounds(conn: &mut PgConnection, partition: &str) -> String {
    sqlx::query_scalar("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = $1")
        .bind(partition)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

/// The first instant of the month `at` falls in and of the next, in milliseconds.
fn month_span(at: i64) -> (i64, i64) {
    use chrono::Datelike;
    let first = parley::domain::time::from_micros(at)
        .date_naive()
        .with_day(1)
        .unwrap();
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap();
    let ms = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis();
    (ms(first), ms(next))
}

async fn sent_message(app: &TestApp) -> (Party, String, String, Value) {
    let creditor = app.party(PartyKind::Creditor, "Acme").await;
    let case = app.create_case(&creditor, None).await;
    let case_id = case["caseId"].as_str().unwrap().to_string();
    let r = app
        .post(
            &creditor.token,
            &format!("/api/cases/{case_id}/messages"),
            &json!({"messageType": "email", "to": "debtor@example.com", "subject": "Reminder", "body": "Please pay."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let message: Value = r.json().await.unwrap();
    let id = message["messageId"].as_str().unwrap().to_string();
    // Delivery steps alone, not `deliver_due`: that would run the keeper too.
    while app.delivery.run_once().await.unwrap() > 0 {}
    let report: Value = app
        .get(
            &creditor.token,
            &format!("/api/messages/{id}/delivery-report"),
        )
        .await
        .json()
        .await
        .unwrap();
    (creditor, case_id, id, report)
}

#[tokio::test]
async fn the_history_lands_in_its_months_and_a_month_past_its_retention_is_dropped() {
    let app = spawn_app().await;
    let system = app.store.system();
    if on_sqlite(&app) {
        // Nothing to keep: one table each.
        let kept = system.keep_partitions(now_micros(), None).await.unwrap();
        assert_eq!(kept, Default::default());
        return;
    }
    let mut conn = PgConnection::connect(app.config.storage.database_url.expose())
        .await
        .unwrap();
    // The migration made this month and the three ahead: a message's history lands in the
    // month its message was made.
    let now = now_micros();
    for table in ["message_events", "job_attempts", "audit_log"] {
        let made = system.history_partitions(table).await.unwrap();
        for n in 0..=AHEAD as u32 {
            let month = month_after(table, now, n);
            assert!(made.contains(&month), "{month} not in {made:?}");
        }
    }
    let (creditor, case_id, message_id, report) = sent_message(&app).await;
    let homes_now = homes(&mut conn, &message_id, &case_id).await;
    for table in ["message_events", "job_attempts", "audit_log"] {
        assert!(
            homes_now.contains(&(table.to_string(), month_of(table, now))),
            "{table} wrote nowhere: {homes_now:?}"
        );
    }
    assert!(
        homes_now.iter().all(|(t, home)| *home == month_of(t, now)),
        "{homes_now:?}"
    );
    assert!(!report["events"].as_array().unwrap().is_empty());
    // A round on time has nothing to make or move.
    assert_eq!(
        system.keep_partitions(now, None).await.unwrap(),
        Default::default()
    );

    // Rows whose month is not made yet (a message of a clock far ahead; an entry as well)
    // wait in DEFAULT; the round that makes their month moves them there.
    let ahead = now + 200 * DAY;
    let ahead_id = format!("msg_{:012x}7000800000000000000a", ahead / 1000);
    sqlx::query("INSERT INTO message_events (message_id, event, at) VALUES ($1, 'queued', $2)")
        .bind(&ahead_id)
        .bind(ahead)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO audit_log (case_id, actor_name, action, target_type, target_id, at) \
         VALUES ($1, 'test', 'case.updated', 'case', 'ahead', $2)",
    )
    .bind(&case_id)
    .bind(ahead)
    .execute(&mut conn)
    .await
    .unwrap();
    let home = |table: &'static str, column: &'static str, value: String| {
        let sql =
            format!("SELECT CAST(tableoid::regclass AS TEXT) FROM {table} WHERE {column} = $1");
        let url = app.config.storage.database_url.expose().to_string();
        async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar::<_, String>(&sql)
                .bind(value)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        home("message_events", "message_id", ahead_id.clone()).await,
        "message_events_default"
    );
    assert_eq!(
        home("audit_log", "target_id", "ahead".into()).await,
        "audit_log_default"
    );
    let kept = system.keep_partitions(ahead, None).await.unwrap();
    assert_eq!(kept.moved, 2, "{kept:?}");
    assert!(
        kept.made.contains(&month_of("message_events", ahead)),
        "{kept:?}"
    );
    assert_eq!(
        home("message_events", "message_id", ahead_id).await,
        month_of("message_events", ahead)
    );
    assert_eq!(
        home("audit_log", "target_id", "ahead".into()).await,
        month_of("audit_log", ahead)
    );
    // The months the migration made and those the keeper makes have the same bounds: each
    // from its first instant to the next month's.
    for (at, made_by) in [(now, "the migration"), (ahead, "the keeper")] {
        let (from, to) = month_span(at);
        for (table, prefix) in [("message_events", "msg"), ("job_attempts", "job")] {
            let ids = bounds(&mut conn, &month_of(table, at)).await;
            assert_eq!(
                ids,
                format!("FOR VALUES FROM ('{prefix}_{from:012x}') TO ('{prefix}_{to:012x}')"),
                "{made_by}"
            );
        }
        let times = bounds(&mut conn, &month_of("audit_log", at)).await;
        assert_eq!(
            times,
            format!("FOR VALUES FROM ('{}') TO ('{}')", from * 1000, to * 1000),
            "{made_by}"
        );
    }
    // The case's audit log reads across its months, in order.
    let log: Value = app
        .get(&creditor.token, &format!("/api/cases/{case_id}/audit-log"))
        .await
        .json()
        .await
        .unwrap();
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.last().unwrap()["targetId"], "ahead", "{log}");
    assert!(entries.len() > 1);

    // Half a year on, with a retention of 30 days, the months that ended before are dropped
    // whole, the message's history with them; the months ahead of that time are made.
    let later = now + 190 * DAY;
    let kept = system
        .keep_partitions(later, Some(Duration::from_secs(30 * 86_400)))
        .await
        .unwrap();
    assert!(
        kept.dropped.contains(&month_of("message_events", now)),
        "{kept:?}"
    );
    assert!(
        !kept.dropped.contains(&month_of("message_events", ahead)),
        "{kept:?}"
    );
    // What is left of the case's history is the entry of the month ahead.
    let left = homes(&mut conn, &message_id, &case_id).await;
    assert_eq!(
        left,
        vec![("audit_log".to_string(), month_of("audit_log", ahead))]
    );
    let audit = system.history_partitions("audit_log").await.unwrap();
    assert!(!audit.contains(&month_of("audit_log", now)), "{audit:?}");
    assert!(audit.contains(&month_of("audit_log", ahead)), "{audit:?}");

    // An event of a message of a dropped month that comes late is not kept, and its month is
    // not made again.
    sqlx::query("INSERT INTO message_events (message_id, event, at) VALUES ($1, 'opened', $2)")
        .bind(&message_id)
        .bind(later)
        .execute(&mut conn)
        .await
        .unwrap();
    let kept = system
        .keep_partitions(later, Some(Duration::from_secs(30 * 86_400)))
        .await
        .unwrap();
    assert_eq!(kept, Default::default());
    let late: i64 = sqlx::query_scalar("SELECT count(*) FROM message_events WHERE message_id = $1")
        .bind(&message_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(late, 0);
}

#[tokio::test]
async fn a_busy_default_partition_leaves_its_month_for_the_next_round() {
    let app = spawn_app().await;
    if on_sqlite(&app) {
        return;
    }
    let system = app.store.system();
    let now = now_micros();
    system.keep_partitions(now, None).await.unwrap();
    // A year ahead (past the months made ahead), an entry lands in DEFAULT; the transaction
    // that wrote it stays open.
    let ahead = now + 365 * DAY;
    let url = app.config.storage.database_url.expose().to_string();
    let mut writer = PgConnection::connect(&url).await.unwrap();
    let mut tx = writer.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO audit_log (case_id, actor_name, action, target_type, target_id, at) \
         VALUES (NULL, 'test', 'case.updated', 'case', 'x', $1)",
    )
    .bind(ahead)
    .execute(&mut *tx)
    .await
    .unwrap();
    let month = month_of("audit_log", ahead);
    let kept = tokio::time::timeout(
        Duration::from_secs(30),
        system.keep_partitions(ahead - 30 * DAY, None),
    )
    .await
    .expect("the keeper waits for a lock no longer than its limit")
    .expect("a busy lock is no error");
    assert!(!kept.made.contains(&month), "{kept:?}");
    assert!(
        !system
            .history_partitions("audit_log")
            .await
            .unwrap()
            .contains(&month)
    );
    tx.commit().await.unwrap();

    let kept = system
        .keep_partitions(ahead - 30 * DAY, None)
        .await
        .unwrap();
    assert!(kept.made.contains(&month), "{kept:?}");
    let home: String = sqlx::query_scalar(
        "SELECT CAST(tableoid::regclass AS TEXT) FROM audit_log WHERE target_id = 'x'",
    )
    .fetch_one(&mut writer)
    .await
    .unwrap();
    assert_eq!(home, month);
}

#[tokio::test]
async fn two_keepers_at_once_make_each_month_once() {
    let app = spawn_app().await;
    if on_sqlite(&app) {
        return;
    }
    // Two processes' keepers (the singleton lets one run; this is the case where both do).
    // However the second ends (it waits for the first's lock and finds the months made, or
    // gives up waiting), each month is made once and neither fails.
    let master = app.config.storage.master_key.unwrap();
    let ring = std::sync::Arc::new(parley::crypto::KeyRing::new(master.expose(), &[]));
    let other = parley::store::Store::connect(app.config.storage.database_url.expose(), 2, ring)
        .await
        .unwrap();
    // Half a year on: the months ahead of then are not made yet.
    let later = now_micros() + 200 * DAY;
    let (mine, theirs) = (app.store.system(), other.system());
    let (a, b) = tokio::join!(
        mine.keep_partitions(later, None),
        theirs.keep_partitions(later, None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for table in ["message_events", "job_attempts", "audit_log"] {
        let made = app.store.system().history_partitions(table).await.unwrap();
        for n in 0..=AHEAD as u32 {
            let month = month_after(table, later, n);
            assert!(made.contains(&month), "{month} not in {made:?}");
            let by = [&a, &b].iter().filter(|k| k.made.contains(&month)).count();
            assert_eq!(by, 1, "{month}: {a:?} {b:?}");
        }
    }
}
