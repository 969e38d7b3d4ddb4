//! Matching helpers for the common shapes of detection logic.
//!
//! All work on `&str` without allocating. The `_ignore_ascii_case` variants
//! fold only ASCII letters, which is what command lines and paths need and
//! what the host's prefilter can honour.

use wildmatch::WildMatch;

pub fn contains(haystack: &str, needle: &str) -> bool {
    haystack.contains(needle)
}

pub fn starts_with(haystack: &str, prefix: &str) -> bool {
    haystack.starts_with(prefix)
}

pub fn ends_with(haystack: &str, suffix: &str) -> bool {
    haystack.ends_with(suffix)
}

pub fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window.eq_ignore_ascii_case(needle))
}

pub fn starts_with_ignore_ascii_case(haystack: &str, prefix: &str) -> bool {
    haystack.len() >= prefix.len() && haystack.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

pub fn ends_with_ignore_ascii_case(haystack: &str, suffix: &str) -> bool {
    haystack.len() >= suffix.len()
        && haystack.as_bytes()[haystack.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// The first of `needles` that occurs in `haystack`.
pub fn contains_any<'n>(haystack: &str, needles: &[&'n str]) -> Option<&'n str> {
    needles.iter().copied().find(|needle| haystack.contains(needle))
}

/// The first of `needles` that occurs in `haystack`, ignoring ASCII case.
pub fn contains_any_ignore_ascii_case<'n>(haystack: &str, needles: &[&'n str]) -> Option<&'n str> {
    needles.iter().copied().find(|needle| contains_ignore_ascii_case(haystack, needle))
}

/// Whether every one of `needles` occurs in `haystack`.
pub fn contains_all(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().all(|needle| haystack.contains(needle))
}

/// The first of `candidates` equal to `value`.
pub fn any_of<'c>(value: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates.iter().copied().find(|candidate| *candidate == value)
}

/// Shell-style wildcard match of the whole of `text`: `*` matches any run of
/// characters (including `/`), `?` exactly one.
pub fn glob(pattern: &str, text: &str) -> bool {
    WildMatch::new(pattern).matches(text)
}

/// [`glob`], ignoring case.
pub fn glob_ignore_case(pattern: &str, text: &str) -> bool {
    WildMatch::new_case_insensitive(pattern).matches(text)
}

/// A compiled regular expression, built once per rule instance.
///
/// ```ignore
/// static BASE64_PIPE: Regex = Regex::new(r"base64\s+(-d|--decode)\b.*\|\s*(ba)?sh\b");
/// fn rule(event: &Event) -> bool { BASE64_PIPE.is_match(&event.text("command_line").unwrap_or_default()) }
/// ```
#[cfg(feature = "regex")]
pub struct Regex {
    pattern: &'static str,
    compiled: std::sync::OnceLock<regex::Regex>,
}

#[cfg(feature = "regex")]
impl Regex {
    pub const fn new(pattern: &'static str) -> Self {
        Regex { pattern, compiled: std::sync::OnceLock::new() }
    }

    /// The compiled expression. Panics on an invalid pattern, which a
    /// rule's own fixture tests catch before it ships.
    pub fn get(&self) -> &regex::Regex {
        self.compiled
            .get_or_init(|| regex::Regex::new(self.pattern).unwrap_or_else(|err| panic!("invalid rule regex: {err}")))
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.get().is_match(text)
    }

    /// The first match's text.
    pub fn find<'t>(&self, text: &'t str) -> Option<&'t str> {
        self.get().find(text).map(|m| m.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_folding_variants_fold_ascii_only() {
        assert!(contains_ignore_ascii_case("/usr/bin/SUDO cat", "sudo"));
        assert!(!contains_ignore_ascii_case("sudo", "sudo cat"));
        assert!(contains_ignore_ascii_case("x", ""));
        assert!(starts_with_ignore_ascii_case("BASH -i", "bash"));
        assert!(!starts_with_ignore_ascii_case("ba", "bash"));
        assert!(ends_with_ignore_ascii_case("/bin/BASH", "/bash"));
        assert!(!ends_with_ignore_ascii_case("sh", "bash"));
        assert!(!contains_ignore_ascii_case("ÉTC", "étc"));
    }

    #[test]
    fn list_helpers_report_which_needle_matched() {
        assert_eq!(contains_any("curl x | sh", &["wget", "| sh"]), Some("| sh"));
        assert_eq!(contains_any("ls", &["wget", "| sh"]), None);
        assert_eq!(contains_any_ignore_ascii_case("CURL", &["curl"]), Some("curl"));
        assert!(contains_all("a b c", &["a", "c"]));
        assert!(!contains_all("a b", &["a", "c"]));
        assert_eq!(any_of("sh", &["bash", "sh"]), Some("sh"));
        assert_eq!(any_of("zsh", &["bash", "sh"]), None);
    }

    #[test]
    fn glob_matches_whole_text_across_slashes() {
        assert!(glob("/etc/systemd/system/*.service", "/etc/systemd/system/evil.service"));
        assert!(glob("*/tmp/*", "/var/tmp/x/y"));
        assert!(glob("sh?", "sh1"));
        assert!(!glob("sh?", "sh"));
        assert!(!glob("/tmp/*", "x/tmp/y"));
        assert!(glob_ignore_case("*.SH", "run.sh"));
    }

    #[cfg(feature = "regex")]
    #[test]
    fn regex_compiles_once_and_matches() {
        static RE: Regex = Regex::new(r"base64\s+(-d|--decode)");
        assert!(RE.is_match("echo x | base64 -d | sh"));
        assert_eq!(RE.find("base64 --decode f"), Some("base64 --decode"));
        assert!(!RE.is_match("base64 file"));
    }
}
