//! Config errors: every problem found, each naming the file, the line where known, the key
//! path and what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// Key path such as `certificates[2].dns_provider`; empty for whole-file problems.
    pub path: String,
    /// What is wrong and, where known, what to do.
    pub message: String,
}

/// A config that could not be read or is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Every problem found, in file order where lines are known.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// The config file could not be read.
    pub fn read(file: &Path, err: &io::Error) -> Self {
        let message = match err.kind() {
            io::ErrorKind::NotFound => {
                "config file not found; pass --config PATH or set CERTKEEPER_CONFIG".to_owned()
            }
            io::ErrorKind::PermissionDenied => {
                "config file is not readable by this user; check its permissions".to_owned()
            }
            _ => format!("cannot read config file: {err}"),
        };
        ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                line: None,
                path: String::new(),
                message,
            }],
        }
    }

    /// The problems as lines `file:line: path: message`, one per problem, each on one line
    /// whatever the config held: control characters (ESC, NUL, CR, newline) are escaped.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| {
                let mut s = self.file.display().to_string();
                if let Some(line) = p.line {
                    s.push_str(&format!(":{line}"));
                }
                s.push_str(": ");
                if !p.path.is_empty() {
                    s.push_str(&p.path);
                    s.push_str(": ");
                }
                s.push_str(&p.message);
                crate::text::escape_line(&s)
            })
            .collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {}
