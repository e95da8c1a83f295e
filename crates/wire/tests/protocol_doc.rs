//! docs/PROTOCOL.md lists every error code the server sends, with the meaning `codes::ALL` gives.

use stampline_wire::codes;

#[test]
fn every_code_is_documented_with_its_meaning() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    let rows: Vec<&str> = doc.lines().map(str::trim).collect();
    let mut missing = Vec::new();
    for (code, meaning) in codes::ALL {
        let row = format!("| `{code}` | {meaning} |");
        if !rows.contains(&row.as_str()) {
            missing.push(row);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/PROTOCOL.md lacks these rows:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_code_the_document_lists_is_in_the_registry() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    let section = doc
        .split("## Error codes")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("an Error codes section");
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let code = line.split('`').nth(1).unwrap_or("");
        assert!(
            codes::meaning(code).is_some(),
            "{code} is documented but not in codes::ALL"
        );
    }
}
