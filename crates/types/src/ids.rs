//! Identifiers. Sandbox ids double as DNS labels (`{port}-{id}.localhost`) and hostnames, so they are
//! restricted to lowercase letters and digits; template ids are path components, so they may not
//! contain separators or dots that could climb out of the templates directory.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id {value:?} is invalid: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// A sandbox id: 1–63 lowercase ASCII letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

impl SandboxId {
    /// Builds an id from 12 random bytes: `i` followed by 20 base-36 characters.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut n = u128::from_le_bytes(bytes);
        let mut s = String::with_capacity(21);
        s.push('i');
        for _ in 0..20 {
            s.push(ALPHABET[(n % 36) as usize] as char);
            n /= 36;
        }
        SandboxId(s)
    }

    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let err = |reason| InvalidId { kind: "sandbox", value: value.to_owned(), reason };
        if value.is_empty() || value.len() > 63 {
            return Err(err("it must be 1 to 63 characters long"));
        }
        if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(err("it may contain only lowercase letters and digits"));
        }
        Ok(SandboxId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SandboxId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> String {
        id.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A template id such as `base`: 1–64 characters of `[a-z0-9_-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateId(String);

impl TemplateId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let err = |reason| InvalidId { kind: "template", value: value.to_owned(), reason };
        if value.is_empty() || value.len() > 64 {
            return Err(err("it must be 1 to 64 characters long"));
        }
        let first = value.as_bytes()[0];
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(err("it must start with a lowercase letter or a digit"));
        }
        if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Err(err("it may contain only lowercase letters, digits, '-' and '_'"));
        }
        Ok(TemplateId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TemplateId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TemplateId> for String {
    fn from(id: TemplateId) -> String {
        id.0
    }
}

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A team: the owner of sandboxes, pools, templates and API keys. Every API key belongs to one, and
/// a key sees only its own team's resources. 1–63 lowercase letters, digits and '-' (not first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Team(String);

impl Team {
    /// The team of the key the daemon creates on first start, and of records older than teams.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let err = |reason| InvalidId { kind: "team", value: value.to_owned(), reason };
        if value.is_empty() || value.len() > 63 {
            return Err(err("it must be 1 to 63 characters long"));
        }
        if value.starts_with('-') {
            return Err(err("it must start with a lowercase letter or a digit"));
        }
        if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(err("it may contain only lowercase letters, digits and '-'"));
        }
        Ok(Team(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Team {
    fn default() -> Self {
        Team(Self::DEFAULT.to_owned())
    }
}

impl TryFrom<String> for Team {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Team> for String {
    fn from(t: Team) -> String {
        t.0
    }
}

impl fmt::Display for Team {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_sandbox_ids_are_valid_dns_labels() {
        for seed in [[0u8; 16], [255u8; 16], [7u8; 16]] {
            let id = SandboxId::from_random(seed);
            assert_eq!(id.as_str().len(), 21);
            SandboxId::parse(id.as_str()).unwrap();
        }
    }

    #[test]
    fn sandbox_ids_reject_what_a_hostname_cannot_hold() {
        for bad in ["", "ABC", "a.b", "a-b", "../x", &"a".repeat(64)] {
            assert!(SandboxId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn team_names_are_labels() {
        for bad in ["", "-a", "A", "a/b", "a.b", "a_b", &"a".repeat(64)] {
            assert!(Team::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["default", "team-7", "0x"] {
            Team::parse(good).unwrap();
        }
        assert_eq!(Team::default().as_str(), Team::DEFAULT);
    }

    #[test]
    fn template_ids_reject_path_tricks() {
        for bad in ["", "..", "a/b", ".hidden", "-x", "Base", "a b"] {
            assert!(TemplateId::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["base", "code-interpreter-v1", "my_tpl2"] {
            TemplateId::parse(good).unwrap();
        }
    }
}
