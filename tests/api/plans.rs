//! The lists that must stay flat at a million messages walk an index, on both databases.
//! A case's threads are counted from an index alone.

use crate::helpers::spawn_app;

#[tokio::test]
async fn every_list_walks_an_index() {
    let app = spawn_app().await;
    let plans = app.store.system().list_plans().await.unwrap();
    assert_eq!(plans.len(), 7);
    for (name, plan) in &plans {
        eprintln!("{name}:\n{plan}\n");
        let lower = plan.to_lowercase();
        assert!(!plan.is_empty(), "{name}: no plan");
        // SQLite names a full read `SCAN <table>` (without an index); PostgreSQL `Seq Scan`.
        let full_read = plan.lines().any(|line| {
            let line = line.trim().to_lowercase();
            line.contains("seq scan on messages")
                || line.contains("seq scan on cases")
                || line.contains("seq scan on threads")
                || ((line.starts_with("scan messages")
                    || line.starts_with("scan cases")
                    || line.starts_with("scan threads")
                    || line.starts_with("scan m")
                    || line.starts_with("scan c ")
                    || line == "scan c"
                    || line.starts_with("scan t"))
                    && !line.contains("using"))
        });
        let admin = name.contains("admin");
        assert!(admin || !full_read, "{name} reads a whole table:\n{plan}");
        assert!(lower.contains("index"), "{name} uses no index:\n{plan}");
        // A thread's count and latest time come from the index on a message's thread alone,
        // never from the messages' rows: that list would otherwise grow with its threads.
        if name.starts_with("threads") {
            assert!(
                lower.contains("covering index messages_thread")
                    || lower.contains("index only scan using messages_thread"),
                "{name} reads the messages' rows:\n{plan}"
            );
        }
    }
}
