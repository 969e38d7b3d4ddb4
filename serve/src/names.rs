//! The names `dac serve` turns into paths and URLs: tenant ids and rule
//! names, checked once, when they enter.

use std::fmt;

/// A rule's name within its tenant: it names the rule's file, so 1 to 64 of
/// `A-Z a-z 0-9 _ -`, starting with a letter or digit — no dots, no
/// separators, nothing that could leave the tenant's directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RuleName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a rule name is 1 to 64 of A-Z a-z 0-9 _ -, starting with a letter or digit")]
    Rule,
    #[error("{0:?} is not a tenant id: 1 to 64 of a-z 0-9 - _, starting with a letter or digit")]
    Tenant(String),
}

impl RuleName {
    pub fn parse(name: &str) -> Result<RuleName, NameError> {
        let ok = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(RuleName(name.to_owned()))
        } else {
            Err(NameError::Rule)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for RuleName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Tenant ids name directories and appear in URLs: lower-case ASCII
/// letters, digits, `-` and `_`, starting with a letter or digit.
pub fn check_tenant_id(id: &str) -> Result<(), NameError> {
    let ok = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(NameError::Tenant(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_a_directory_are_refused() {
        for ok in ["shadow", "a", "Base-64_x", &"x".repeat(64)] {
            assert_eq!(RuleName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", ".", "..", "../x", "a/b", "-a", "_a", "a.wasm", "é", &"x".repeat(65)] {
            assert_eq!(RuleName::parse(bad), Err(NameError::Rule), "{bad:?}");
        }
        assert!(check_tenant_id("acme-1").is_ok());
        for bad in ["Acme", "../x", "", "-a"] {
            assert!(check_tenant_id(bad).is_err(), "{bad:?}");
        }
    }
}
