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
    /// Refused after the password was verified (a successful bind, a
    /// matching app or mailcow password): AD's "password expired" and the
    /// like, a mailbox set to "disallow login", a protocol the mailbox may
    /// not use. Dovecot is told why (`nologin` and `reason=`, with the text
    /// of `[messages]`), so the client shows it instead of asking for the
    /// password again. Never for a wrong password, an unknown user or a
    /// locked-out account: naming those would tell anyone whether the
    /// account exists. The text is the log's.
    NoLogin(Reason, String),
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
            Failure::NoLogin(why, r) => write!(
                f,
                "denied: {r} (the client is told why: messages.{})",
                why.key()
            ),
            Failure::NotOurs(why) => write!(f, "not ours: {why}; mailcow's own passdb decides"),
            Failure::Temporary(r) => write!(f, "temporary failure: {r}"),
            Failure::Misuse(r) => write!(f, "misuse: {r}"),
        }
    }
}

/// Why a login whose password was right is refused, as the user is told
/// ([`Failure::NoLogin`]); each has its text in the config's `[messages]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Active Directory `data 532`; OpenLDAP ppolicy `passwordExpired`.
    PasswordExpired,
    /// Active Directory `data 773`.
    MustChangePassword,
    /// Active Directory `data 533`.
    AccountDisabled,
    /// Active Directory `data 701`.
    AccountExpired,
    /// Active Directory `data 530`.
    LogonHours,
    /// Active Directory `data 531`.
    Workstation,
    /// mailcow's "disallow login" (`mailbox.active = 2`).
    LoginDisabled,
    /// `<service>_access` is off for the mailbox.
    ServiceNotAllowed,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::PasswordExpired,
        Reason::MustChangePassword,
        Reason::AccountDisabled,
        Reason::AccountExpired,
        Reason::LogonHours,
        Reason::Workstation,
        Reason::LoginDisabled,
        Reason::ServiceNotAllowed,
    ];

    /// Its key in `[messages]`.
    pub fn key(self) -> &'static str {
        match self {
            Reason::PasswordExpired => "password_expired",
            Reason::MustChangePassword => "must_change_password",
            Reason::AccountDisabled => "account_disabled",
            Reason::AccountExpired => "account_expired",
            Reason::LogonHours => "logon_hours",
            Reason::Workstation => "workstation",
            Reason::LoginDisabled => "login_disabled",
            Reason::ServiceNotAllowed => "service_not_allowed",
        }
    }

    /// The text when `[messages]` does not set one.
    pub fn default_text(self) -> &'static str {
        match self {
            Reason::PasswordExpired => {
                "Your password has expired. Please change it, then log in again."
            }
            Reason::MustChangePassword => "You must change your password before you can log in.",
            Reason::AccountDisabled => {
                "Your account is disabled. Please contact your administrator."
            }
            Reason::AccountExpired => {
                "Your account has expired. Please contact your administrator."
            }
            Reason::LogonHours => "You may not log in at this time.",
            Reason::Workstation => "You may not log in from here.",
            Reason::LoginDisabled => {
                "Login is disabled for this mailbox. Please contact your administrator."
            }
            Reason::ServiceNotAllowed => {
                "This mailbox may not use this protocol. Please contact your administrator."
            }
        }
    }

    /// The reason of an Active Directory `data` code that AD (and Samba)
    /// give only when the password was right. Not `52e` (wrong password),
    /// `525` (no such user) or `775` (locked out, answered whatever the
    /// password).
    pub fn from_ad_code(code: &str) -> Option<Reason> {
        Some(match code {
            "530" => Reason::LogonHours,
            "531" => Reason::Workstation,
            "532" => Reason::PasswordExpired,
            "533" => Reason::AccountDisabled,
            "701" => Reason::AccountExpired,
            "773" => Reason::MustChangePassword,
            _ => return None,
        })
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
    /// This refusal where the password was not verified (yet): a
    /// [`Failure::NoLogin`] becomes the plain [`Failure::Denied`].
    pub fn unverified(self) -> Failure {
        match self {
            Failure::NoLogin(_, detail) => Failure::Denied(detail),
            f => f,
        }
    }

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
            // checkpassword accepts with `nologin` (Dovecot then refuses the
            // login with the reason); a plain refusal everywhere else.
            (Failure::NoLogin(..), Password) => Verdict::Reject,
            (Failure::NoLogin(..), Lookup) => Verdict::Unknown,
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
            (
                Failure::NoLogin(Reason::PasswordExpired, "x".into()),
                Password,
                1,
            ),
            (
                Failure::NoLogin(Reason::PasswordExpired, "x".into()),
                Lookup,
                3,
            ),
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
            Failure::NoLogin(Reason::LoginDisabled, "x".into()),
            Failure::Temporary("x".into()),
            Failure::Misuse("x".into()),
        ] {
            assert_ne!(f.verdict(Lookup).exit_code(), 1, "{f:?}");
        }
    }

    #[test]
    fn reasons_only_for_codes_given_after_the_password() {
        for (code, key) in [
            ("530", "logon_hours"),
            ("531", "workstation"),
            ("532", "password_expired"),
            ("533", "account_disabled"),
            ("701", "account_expired"),
            ("773", "must_change_password"),
        ] {
            assert_eq!(Reason::from_ad_code(code).map(Reason::key), Some(key));
        }
        // Wrong password, no such user, locked out (whatever the password).
        for code in ["52e", "525", "775", "568", ""] {
            assert_eq!(Reason::from_ad_code(code), None, "{code}");
        }
        let keys: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.key()).collect();
        assert_eq!(keys.len(), Reason::ALL.len());
    }
}
