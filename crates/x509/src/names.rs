//! Whether a leaf's names cover the configured domains, by RFC 6125 rules: a wildcard SAN
//! stands for exactly one whole left-most label; a configured wildcard needs the same
//! wildcard SAN; comparison is case-insensitive; the subject CN is not consulted.

/// Whether the SANs cover `domain` (lower-case).
pub fn covers(sans: &[String], domain: &str) -> bool {
    let domain = domain.to_ascii_lowercase();
    sans.iter().any(|san| san_matches(san, &domain))
}

/// The configured domains that the SANs do not cover, in order.
pub fn uncovered<'a>(sans: &[String], domains: &'a [String]) -> Vec<&'a str> {
    domains
        .iter()
        .filter(|d| !covers(sans, d))
        .map(|d| d.as_str())
        .collect()
}

fn san_matches(san: &str, domain: &str) -> bool {
    let san = san.to_ascii_lowercase();
    if san == domain {
        return true;
    }
    // A configured wildcard is only covered by the identical wildcard (above).
    if domain.starts_with("*.") {
        return false;
    }
    let Some(base) = san.strip_prefix("*.") else {
        return false;
    };
    // The wildcard must stand in front of at least two labels (no "*.com"), and matches one
    // whole label: "a.example.com" but neither "example.com" nor "a.b.example.com".
    if !base.contains('.') || base.contains('*') {
        return false;
    }
    match domain.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest == base,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_and_case_insensitive() {
        assert!(covers(&sans(&["example.com"]), "example.com"));
        assert!(covers(&sans(&["Example.COM"]), "example.com"));
        assert!(!covers(&sans(&["example.com"]), "www.example.com"));
    }

    #[test]
    fn wildcard_covers_one_label() {
        let s = sans(&["*.example.com"]);
        assert!(covers(&s, "www.example.com"));
        assert!(covers(&s, "api.example.com"));
        assert!(!covers(&s, "example.com"));
        assert!(!covers(&s, "a.b.example.com"));
        assert!(!covers(&s, "wwwexample.com"));
    }

    #[test]
    fn configured_wildcard_needs_wildcard_san() {
        assert!(covers(&sans(&["*.example.com"]), "*.example.com"));
        assert!(!covers(&sans(&["www.example.com"]), "*.example.com"));
        assert!(!covers(&sans(&["*.a.example.com"]), "*.example.com"));
    }

    #[test]
    fn malformed_wildcards_match_nothing() {
        assert!(!covers(&sans(&["*.com"]), "example.com"));
        assert!(!covers(&sans(&["w*.example.com"]), "www.example.com"));
        assert!(!covers(&sans(&["*.*.example.com"]), "a.b.example.com"));
    }

    #[test]
    fn lists_uncovered() {
        let domains = vec!["example.com".to_string(), "*.example.com".to_string()];
        assert_eq!(
            uncovered(&sans(&["example.com"]), &domains),
            vec!["*.example.com"]
        );
        assert!(uncovered(&sans(&["example.com", "*.example.com"]), &domains).is_empty());
    }
}
