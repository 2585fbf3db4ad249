//! The dependency rule between layers, checked on the source: a module imports only modules
//! of a lower layer (and itself). The layers, lowest first:
//!
//! 1. `domain`: types and rules, no I/O;
//! 2. `config`, `crypto`: settings and sealing;
//! 3. `store`, `documents`, `telemetry`, `wire`: persistence (SQL, document bytes), logging,
//!    the mail protocols' clients (SMTP, IMAP);
//! 4. `app`, `worker`: use cases, and the queue engine;
//! 5. `http`, `delivery`, `webhooks`, `inbound`, `periodic`, `connectors`: the ways in and
//!    out (and the work that comes round on a timer), which call `app` and never each other.
//!
//! `lib.rs` and `main.rs` put them together and may use all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const LAYERS: &[(&str, u8)] = &[
    ("domain", 1),
    ("config", 2),
    ("crypto", 2),
    ("telemetry", 3),
    ("store", 3),
    ("documents", 3),
    ("wire", 3),
    ("app", 4),
    ("worker", 4),
    ("http", 5),
    ("delivery", 5),
    ("webhooks", 5),
    ("inbound", 5),
    ("periodic", 5),
    ("connectors", 5),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a source file names with `crate::…`.
fn imports(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    found
}

#[test]
fn no_module_imports_a_module_of_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        let own =
            layer(module).unwrap_or_else(|| panic!("src/{module} has no layer: add it to LAYERS"));
        let source = std::fs::read_to_string(file).unwrap();
        for import in imports(&source) {
            seen += 1;
            let Some(theirs) = layer(&import) else {
                continue;
            };
            if import != module && theirs >= own {
                broken
                    .entry(relative.display().to_string())
                    .or_default()
                    .push(format!("crate::{import}"));
            }
        }
    }
    assert!(seen > 50, "the scan found the sources");
    assert!(broken.is_empty(), "imports against the layers: {broken:#?}");
}

#[test]
fn the_scan_finds_imports() {
    assert_eq!(
        imports("use crate::store::Store;\nlet x = crate::domain::time::now();"),
        ["store", "domain"]
    );
}

/// Where `.store` is used as a field or method (`state.store`, `self.store.get_case`), not
/// as part of a longer name (`.stored`, `.store_id`); and where the type `store::Store` is
/// named.
fn store_accesses(source: &str) -> usize {
    whole(source, ".store") + whole(source, "store::Store")
}

/// The files in which `count` finds something, with how much.
fn found_in(files: &[std::path::PathBuf], count: fn(&str) -> usize) -> BTreeMap<String, usize> {
    files
        .iter()
        .map(|f| {
            let source = std::fs::read_to_string(f).unwrap();
            (f.display().to_string(), count(&source))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// How often `needle` occurs not followed by a character of a name.
fn whole(source: &str, needle: &str) -> usize {
    source
        .match_indices(needle)
        .filter(|(at, m)| {
            !source[at + m.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .count()
}

#[test]
fn http_handlers_reach_the_store_only_through_the_application_layer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(files.len() > 10, "the scan found the handlers");
    let reaching = found_in(&files, store_accesses);
    assert!(
        reaching.is_empty(),
        "HTTP code that reaches into the store instead of calling app/: {reaching:#?}"
    );
}

/// Where a value of the whole store is kept (`store: Store`, `x: crate::store::Store`), not
/// borrowed for a moment (`store: &Store`) to take handles from.
fn owned_stores(source: &str) -> usize {
    [": Store", ": store::Store", ": crate::store::Store"]
        .iter()
        .map(|needle| whole(source, needle))
        .sum()
}

#[test]
fn services_and_workers_hold_narrow_store_handles_not_the_whole_store() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in [
        "app",
        "delivery",
        "webhooks",
        "inbound",
        "http",
        "documents",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    files.extend(["worker.rs", "periodic.rs"].map(|f| root.join(f)));
    assert!(files.len() > 40, "the scan found the services");
    let holding = found_in(&files, owned_stores);
    assert!(
        holding.is_empty(),
        "code that keeps the whole store instead of the handles it uses: {holding:#?}"
    );
}

#[test]
fn the_owned_store_scan_tells_keeping_from_borrowing() {
    assert_eq!(
        owned_stores(
            "struct A { store: Store, b: crate::store::Store } fn f(store: &Store, c: Stores, \
             d: store::StoreError, e: crate::store::Cases)"
        ),
        2
    );
}

/// Case ids held as text (`case_id: &str`, `case_id: Option<String>`, ...).
fn untyped_case_ids(source: &str) -> usize {
    [
        "&str",
        "&'a str",
        "String",
        "Option<String>",
        "Option<&str>",
        "Option<&'a str>",
        "Vec<String>",
    ]
    .iter()
    .map(|ty| whole(source, &format!("case_id: {ty}")) + whole(source, &format!("case_ids: {ty}")))
    .sum()
}

#[test]
fn case_ids_travel_as_case_ids_not_text() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut untyped = found_in(&files, untyped_case_ids);
    // The one exception: the body of an assignment keeps the client's text, so that a
    // malformed id answers 404 like an unknown one.
    untyped.retain(|f, n| !(f.ends_with("src/http/inbound.rs") && *n == 1));
    assert!(untyped.is_empty(), "case ids as text: {untyped:#?}");
}

/// Other ids held as text under their names (`message_id: &str`, `thread_id: String`, ...).
fn untyped_ids(source: &str) -> usize {
    let names = [
        "message_id",
        "thread_id",
        "document_id",
        "webhook_id",
        "delivery_id",
        "note_id",
    ];
    let types = [
        "&str",
        "&'a str",
        "String",
        "Option<String>",
        "Option<&str>",
        "Vec<String>",
    ];
    names
        .iter()
        .flat_map(|n| types.iter().map(move |t| format!("{n}: {t}")))
        .map(|needle| word(source, &needle))
        .sum()
}

/// How often `needle` occurs as words of its own: no character of a name before or after.
fn word(source: &str, needle: &str) -> usize {
    let name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    source
        .match_indices(needle)
        .filter(|(at, m)| {
            !source[..*at].chars().next_back().is_some_and(name)
                && !source[at + m.len()..].chars().next().is_some_and(name)
        })
        .count()
}

#[test]
fn message_thread_document_webhook_delivery_and_note_ids_are_typed_below_http() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    // HTTP shapes hold the text they send and receive (a path's id is parsed into its type).
    files.retain(|f| !f.starts_with(root.join("http")));
    let mut untyped = found_in(&files, untyped_ids);
    // The `Message-ID` header of a received mail is the sender's text, not one of our ids.
    untyped.retain(|f, n| {
        !((f.ends_with("src/domain/mail.rs") || f.ends_with("src/app/inbound.rs")) && *n == 1)
    });
    assert!(untyped.is_empty(), "ids as text: {untyped:#?}");
    assert_eq!(
        untyped_ids("fn f(message_id: &str, thread_id: ThreadId, note_id: String)"),
        2
    );
}

#[test]
fn the_case_id_scan_finds_text() {
    assert_eq!(
        untyped_case_ids(
            "fn f(case_id: &str, b: Option<String>) { struct A { case_id: Option<String>, \
             case_ids: Vec<String>, c: CaseId, case_id: CaseId, case_id_text: String } }"
        ),
        3
    );
}

#[test]
fn the_store_scan_finds_accesses() {
    assert_eq!(
        store_accesses(
            "state.store.get_case(x); let p = s.stored; self.store_id; a.store; \
             use crate::store::StoreError; fn f(s: crate::store::Store)"
        ),
        3
    );
}

/// Whether a line starts a function: `fn`, after any of `pub`, `pub(crate)`, `pub(super)`,
/// `async`, `const`, `unsafe`.
fn starts_fn(line: &str) -> bool {
    let mut rest = line.trim_start();
    loop {
        let next = [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "const ",
            "unsafe ",
        ]
        .iter()
        .find_map(|q| rest.strip_prefix(q));
        match next {
            Some(r) => rest = r,
            None => return rest.starts_with("fn "),
        }
    }
}

/// The braces of a line that count: outside string and character literals and comments.
fn brace_delta(line: &str) -> (i32, bool) {
    let (mut delta, mut opened, mut in_str) = (0, false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_str => {
                chars.next();
            }
            '"' => in_str = !in_str,
            '/' if !in_str && chars.peek() == Some(&'/') => break,
            '\'' if !in_str => {
                // A character literal ('{', '\'') or a lifetime ('a): skip a literal whole.
                let ahead: String = chars.clone().take(3).collect();
                if ahead.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                } else if ahead.starts_with('\\') {
                    chars.nth(2);
                }
            }
            '{' if !in_str => {
                delta += 1;
                opened = true;
            }
            '}' if !in_str => delta -= 1,
            _ => {}
        }
    }
    (delta, opened)
}

/// Functions of `source` longer than `max` lines, outside its `#[cfg(test)]` module, with
/// the line each starts on.
fn long_functions(source: &str, max: usize) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = source
        .lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .collect();
    let mut long = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !starts_fn(lines[i]) {
            i += 1;
            continue;
        }
        let (mut depth, mut started, mut j) = (0, false, i);
        while j < lines.len() {
            let (delta, opened) = brace_delta(lines[j]);
            depth += delta;
            started |= opened;
            if (started && depth <= 0) || (!started && lines[j].trim_end().ends_with(';')) {
                break;
            }
            j += 1;
        }
        if started && j + 1 - i > max {
            long.push((i + 1, j + 1 - i));
        }
        i = if started { j + 1 } else { i + 1 };
    }
    long
}

#[test]
fn no_function_in_src_is_longer_than_a_hundred_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for file in &files {
        let found = long_functions(&std::fs::read_to_string(file).unwrap(), 100);
        if !found.is_empty() {
            long.insert(file.display().to_string(), found);
        }
    }
    assert!(
        long.is_empty(),
        "functions over 100 lines (line, length): {long:#?}"
    );
}

#[test]
fn the_length_scan_finds_a_long_function_and_skips_braces_in_strings() {
    let mut source = String::from("pub async fn long() {\n    let s = \"}}}\";\n");
    for _ in 0..100 {
        source.push_str("    let _ = '{';\n");
    }
    source.push_str("}\nfn short() {}\n");
    assert_eq!(long_functions(&source, 100), [(1, 103)]);
    assert!(long_functions(&source, 103).is_empty());
}
