//! Finds the line of a key path (`certificates[2].dns_provider`) in the YAML text, so that
//! semantic errors can say where to look, as parse errors do.
//!
//! Block-style YAML (what operators write) is located exactly; inside flow style
//! (`{ a: 1 }`) the nearest enclosing key's line is given. It is a best-effort reader of
//! indentation, not a YAML parser: the real parse has already succeeded when it runs.

use std::fmt;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A key path such as `certificates[2].dns_provider`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// A path of one key.
    pub fn key(k: &str) -> Self {
        KeyPath(vec![Segment::Key(k.to_owned())])
    }

    /// This path with a key appended.
    pub fn with_key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(k.to_owned()));
        p
    }

    /// This path with an index appended.
    pub fn with_index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if n == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line where `path` is written, or where its nearest written ancestor is.
pub fn line_of(text: &str, path: &KeyPath) -> Option<usize> {
    let lines: Vec<Line> = text.lines().map(Line::read).collect();
    let mut range = 0..lines.len();
    let mut found = None;
    for seg in &path.0 {
        let hit = match seg {
            Segment::Key(k) => find_key(&lines, range.clone(), k),
            Segment::Index(i) => find_item(&lines, range.clone(), *i),
        };
        match hit {
            Some((line, sub)) => {
                found = Some(line + 1);
                range = sub;
            }
            None => break,
        }
    }
    found
}

/// What the locator needs to know of one line.
struct Line {
    /// Column of the first non-space character, or None for blank and comment lines.
    first: Option<usize>,
    /// Column where the line's key starts, after any `- ` item markers.
    key_col: usize,
    /// The key, when the line holds `key:`.
    key: Option<String>,
    /// Whether the line starts a sequence item.
    dash: bool,
}

impl Line {
    fn read(raw: &str) -> Line {
        let trimmed = raw.trim_start_matches(' ');
        let first = raw.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            return Line {
                first: None,
                key_col: 0,
                key: None,
                dash: false,
            };
        }
        let dash = trimmed == "-" || trimmed.starts_with("- ");
        let mut rest = trimmed;
        let mut key_col = first;
        while rest == "-" || rest.starts_with("- ") {
            let after = rest[1..].trim_start_matches(' ');
            key_col += rest.len() - after.len();
            rest = after;
        }
        let key = rest.find(':').and_then(|colon| {
            let after = &rest[colon + 1..];
            if !(after.is_empty() || after.starts_with(' ')) {
                return None;
            }
            let k = rest[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
            (!k.is_empty() && !k.starts_with('{') && !k.starts_with('[')).then(|| k.to_owned())
        });
        Line {
            first: Some(first),
            key_col,
            key,
            dash,
        }
    }
}

fn find_key(
    lines: &[Line],
    range: std::ops::Range<usize>,
    key: &str,
) -> Option<(usize, std::ops::Range<usize>)> {
    let level = range
        .clone()
        .filter(|&i| lines[i].key.is_some())
        .map(|i| lines[i].key_col)
        .min()?;
    let at = range
        .clone()
        .find(|&i| lines[i].key_col == level && lines[i].key.as_deref() == Some(key))?;
    let end = (at + 1..range.end)
        .find(|&j| match lines[j].first {
            Some(first) => first < level || (first == level && !lines[j].dash),
            None => false,
        })
        .unwrap_or(range.end);
    Some((at, at + 1..end))
}

fn find_item(
    lines: &[Line],
    range: std::ops::Range<usize>,
    index: usize,
) -> Option<(usize, std::ops::Range<usize>)> {
    let level = range
        .clone()
        .filter(|&i| lines[i].dash)
        .filter_map(|i| lines[i].first)
        .min()?;
    let starts: Vec<usize> = range
        .clone()
        .filter(|&i| lines[i].dash && lines[i].first == Some(level))
        .collect();
    let at = *starts.get(index)?;
    let end = starts.get(index + 1).copied().unwrap_or(range.end);
    Some((at, at..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
state_dir: /var/lib/x
issuers:
  le:
    type: acme
    directory: https://example.test/dir
  # a comment
  internal:
    type: local-ca
certificates:
- name: a
  domains: [a.test]
- name: b
  domains:
    - b.test
    - c.test
  dns_provider: cf
alerts:
  - type: slack
    on: [failed]
";

    fn path(parts: &[&str]) -> KeyPath {
        KeyPath(
            parts
                .iter()
                .map(|p| match p.parse::<usize>() {
                    Ok(i) => Segment::Index(i),
                    Err(_) => Segment::Key((*p).to_owned()),
                })
                .collect(),
        )
    }

    #[test]
    fn finds_block_keys() {
        assert_eq!(line_of(DOC, &path(&["state_dir"])), Some(1));
        assert_eq!(
            line_of(DOC, &path(&["issuers", "le", "directory"])),
            Some(5)
        );
        assert_eq!(
            line_of(DOC, &path(&["issuers", "internal", "type"])),
            Some(8)
        );
        assert_eq!(
            line_of(DOC, &path(&["certificates", "1", "dns_provider"])),
            Some(16)
        );
        assert_eq!(
            line_of(DOC, &path(&["certificates", "1", "domains", "1"])),
            Some(15)
        );
        assert_eq!(
            line_of(DOC, &path(&["certificates", "0", "name"])),
            Some(10)
        );
        assert_eq!(line_of(DOC, &path(&["alerts", "0", "on"])), Some(19));
    }

    #[test]
    fn falls_back_to_nearest_ancestor() {
        assert_eq!(
            line_of(DOC, &path(&["certificates", "0", "domains", "0"])),
            Some(11)
        );
        assert_eq!(
            line_of(DOC, &path(&["certificates", "0", "missing"])),
            Some(10)
        );
        assert_eq!(line_of(DOC, &path(&["nothing"])), None);
    }

    #[test]
    fn displays_paths() {
        assert_eq!(
            path(&["certificates", "2", "dns_provider"]).to_string(),
            "certificates[2].dns_provider"
        );
    }
}
