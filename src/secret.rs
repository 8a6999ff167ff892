//! A password or other credential: never printed, zeroised when dropped.

use std::fmt;
use zeroize::Zeroizing;

/// A secret string. `Debug` and `Display` are redacted; the bytes are
/// overwritten with zeros when the value is dropped.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

/// No core dumps, for this process and what it execs: a dump would write the
/// passwords and secrets in memory (and buffers freed without zeroing, such
/// as the HTTP stack's read buffers) to disk. Soft and hard limit 0, so
/// nothing later can raise it; failure to set it is ignored (the limit is
/// then what the system gave).
pub fn no_core_dumps() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let _ = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
}

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret's text, for handing to a bind or a database login only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

/// Secrets in the raw config (TOML) are read straight into a `Secret`, so the
/// parsed structs never hold a password in a plain `String` (nor print one).
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(<empty>)");
    }

    #[test]
    fn raw_config_debug_never_prints_a_password() {
        let raw = crate::config::parse_str(
            "[ldap]\nbind_password = \"hunter2\"\n[database]\npassword = \"dbpw42\"\n\
             [mailcow]\nredis_url = \"redis://:redispw9@h\"\n",
        )
        .unwrap();
        let shown = format!("{raw:?}");
        for pw in ["hunter2", "dbpw42", "redispw9"] {
            assert!(!shown.contains(pw), "{pw} in {shown}");
        }
        assert!(raw.holds_password());
    }
}
