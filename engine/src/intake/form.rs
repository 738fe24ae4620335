//! Web forms: the free text, then each labelled field as `label: value`.

use std::collections::BTreeMap;

/// The free text followed by the non-empty fields (`snake_case` labels read as words).
pub fn text(free_text: &str, fields: &BTreeMap<String, String>) -> String {
    let labelled: Vec<String> = fields
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{}: {}", k.replace(['_', '-'], " "), v.trim()))
        .collect();
    let free = free_text.trim();
    match (free.is_empty(), labelled.is_empty()) {
        (_, true) => free.to_string(),
        (true, false) => labelled.join("; "),
        (false, false) => format!("{} {}", free, labelled.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_left_out() {
        let mut f = BTreeMap::new();
        f.insert("reason".to_string(), " ".to_string());
        assert_eq!(text("Karte verloren", &f), "Karte verloren");
        f.insert("lost_on".to_string(), "2026-11-02".to_string());
        assert_eq!(text("", &f), "lost on: 2026-11-02");
    }
}
