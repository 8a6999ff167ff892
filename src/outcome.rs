//! The one place that decides accept / reject / unknown / temporary, and the
//! exit status Dovecot's checkpassword driver reads for each.
//!
//! Dovecot 2.3 (`src/auth/db-checkpassword.c`): for a password check, 0 with
//! output is success, 1 is "login failed", 2 is "misused", anything else an
//! internal (temporary) failure. For a lookup (`AUTHORIZED=1`), 2 with output is
//! success, 3 is "user unknown", anything else an internal failure: so a
//! rejection during a lookup must be 3, never 1.

use std::fmt;

/// Why a request did not succeed, shaped by what the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request itself is unusable: empty or malformed login, empty password.
    BadRequest(String),
    /// No directory entry (or no mailbox) for this login.
    UnknownUser,
    /// More than one directory entry matches the login.
    Ambiguous(usize),
    /// The directory refused the user's password.
    WrongPassword,
    /// The user exists and the password may be right, but policy says no:
    /// inactive mailbox or domain, service not allowed, not an LDAP mailbox,
    /// no template, domain full.
    Denied(String),
    /// Not ours to decide: another passdb (mailcow's own) must. The text
    /// says why: the mailbox's authsource is `keycloak` / `generic-oidc`,
    /// mailcow's Identity Provider is not LDAP, the login comes from SOGo's
    /// address. Refused here without asking the directory; the HTTP front
    /// end says `"not_ours": true`, so a passdb chain hands it on.
    NotOurs(String),
    /// Nothing was decided: directory or database unreachable, timeout, TLS
    /// failure, bad service credentials, bad configuration. Try again later.
    Temporary(String),
    /// The program was called wrongly (missing reply program, unreadable fd 3).
    Misuse(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadRequest(r) => write!(f, "invalid request: {r}"),
            Failure::UnknownUser => f.write_str("unknown user"),
            Failure::Ambiguous(n) => write!(f, "ambiguous login: {n} directory entries match"),
            Failure::WrongPassword => f.write_str("wrong password"),
            Failure::Denied(r) => write!(f, "denied: {r}"),
            Failure::NotOurs(why) => write!(f, "not ours: {why}; mailcow's own passdb decides"),
            Failure::Temporary(r) => write!(f, "temporary failure: {r}"),
            Failure::Misuse(r) => write!(f, "misuse: {r}"),
        }
    }
}

/// What kind of request Dovecot made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Check a password (passdb).
    Password,
    /// Does the user exist, and what are its fields (userdb, `AUTHORIZED=1`).
    Lookup,
}

/// The verdict, as the checkpassword protocol knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Exec the reply program (it exits 0, or 2 for a lookup).
    Accept,
    /// Exit 1: password wrong, user unknown or not allowed.
    Reject,
    /// Exit 3: lookup of a user that does not exist (or may not log in).
    Unknown,
    /// Exit 111: nothing decided, try again later.
    Temporary,
    /// Exit 2: called wrongly.
    Misuse,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            // Only reached when the reply program could not be run.
            Verdict::Accept => 0,
            Verdict::Reject => 1,
            Verdict::Misuse => 2,
            Verdict::Unknown => 3,
            Verdict::Temporary => 111,
        }
    }

    /// A short word for logs.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject => "reject",
            Verdict::Unknown => "unknown",
            Verdict::Temporary => "tempfail",
            Verdict::Misuse => "misuse",
        }
    }
}

impl Failure {
    /// The verdict for this failure. Exhaustive on purpose: a new kind of
    /// failure must be placed here before the program compiles.
    pub fn verdict(&self, kind: RequestKind) -> Verdict {
        use RequestKind::*;
        match (self, kind) {
            (Failure::BadRequest(_), Password) => Verdict::Reject,
            (Failure::BadRequest(_), Lookup) => Verdict::Unknown,
            (Failure::UnknownUser, Password) => Verdict::Reject,
            (Failure::UnknownUser, Lookup) => Verdict::Unknown,
            (Failure::Ambiguous(_), Password) => Verdict::Reject,
            (Failure::Ambiguous(_), Lookup) => Verdict::Unknown,
            (Failure::WrongPassword, Password) => Verdict::Reject,
            // A lookup never checks a password; treat it like "unknown" if it ever happens.
            (Failure::WrongPassword, Lookup) => Verdict::Unknown,
            (Failure::Denied(_), Password) => Verdict::Reject,
            (Failure::Denied(_), Lookup) => Verdict::Unknown,
            (Failure::NotOurs(_), Password) => Verdict::Reject,
            (Failure::NotOurs(_), Lookup) => Verdict::Unknown,
            (Failure::Temporary(_), Password | Lookup) => Verdict::Temporary,
            (Failure::Misuse(_), Password) => Verdict::Misuse,
            // Exit 2 means "found" during a lookup: a misuse there is an internal failure.
            (Failure::Misuse(_), Lookup) => Verdict::Temporary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestKind::*;

    #[test]
    fn exit_code_table() {
        let cases: &[(Failure, RequestKind, u8)] = &[
            (Failure::BadRequest("x".into()), Password, 1),
            (Failure::BadRequest("x".into()), Lookup, 3),
            (Failure::UnknownUser, Password, 1),
            (Failure::UnknownUser, Lookup, 3),
            (Failure::Ambiguous(2), Password, 1),
            (Failure::Ambiguous(2), Lookup, 3),
            (Failure::WrongPassword, Password, 1),
            (Failure::Denied("x".into()), Password, 1),
            (Failure::Denied("x".into()), Lookup, 3),
            (Failure::NotOurs("keycloak".into()), Password, 1),
            (Failure::NotOurs("keycloak".into()), Lookup, 3),
            (Failure::Temporary("x".into()), Password, 111),
            (Failure::Temporary("x".into()), Lookup, 111),
            (Failure::Misuse("x".into()), Password, 2),
            (Failure::Misuse("x".into()), Lookup, 111),
        ];
        for (f, k, code) in cases {
            assert_eq!(f.verdict(*k).exit_code(), *code, "{f:?} {k:?}");
        }
    }

    #[test]
    fn a_lookup_never_exits_1() {
        for f in [
            Failure::BadRequest("x".into()),
            Failure::UnknownUser,
            Failure::Ambiguous(3),
            Failure::WrongPassword,
            Failure::Denied("x".into()),
            Failure::Temporary("x".into()),
            Failure::Misuse("x".into()),
        ] {
            assert_ne!(f.verdict(Lookup).exit_code(), 1, "{f:?}");
        }
    }
}
