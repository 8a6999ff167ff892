//! The decision for one login or lookup, shared by every front end
//! (`checkpassword`, `test`). It returns either the accepted user with its
//! userdb fields or a [`Failure`]; [`Failure::verdict`] turns that into an
//! exit status.

use crate::config::Config;
use crate::directory::{Directory, Found, Trace, UserEntry};
use crate::outcome::{Failure, RequestKind};
use crate::secret::Secret;
use std::time::Instant;

/// Longest login accepted (Dovecot sends at most 512 bytes for login and password together).
pub const MAX_LOGIN_LEN: usize = 256;

/// One request, as received from Dovecot or the admin.
#[derive(Debug)]
pub struct Request {
    pub login: String,
    /// `None` for a lookup.
    pub password: Option<Secret>,
    pub kind: RequestKind,
    /// Dovecot's `SERVICE` (imap, pop3, sieve, smtp, ...), lower-cased.
    pub service: Option<String>,
    pub remote_ip: Option<String>,
}

/// The userdb fields handed back to Dovecot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFields {
    pub uid: String,
    pub gid: String,
    pub home: String,
    /// Mailbox quota in bytes; `None` or 0 means no quota rule.
    pub quota_bytes: Option<u64>,
}

impl UserFields {
    /// `(name, value)` pairs with Dovecot's userdb field names.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("uid", self.uid.clone()),
            ("gid", self.gid.clone()),
            ("home", self.home.clone()),
        ];
        if let Some(q) = self.quota_bytes.filter(|&q| q > 0) {
            v.push(("quota_rule", format!("*:bytes={q}")));
        }
        v
    }
}

/// An accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The canonical login Dovecot should use from now on.
    pub user: String,
    pub fields: UserFields,
}

/// The result of [`decide`], with what the log line needs.
#[derive(Debug)]
pub struct Decision {
    pub result: Result<Accepted, Failure>,
    /// The directory host that answered, if any.
    pub host: Option<String>,
    /// The user's entry, when the directory found one.
    pub entry: Option<UserEntry>,
}

/// Check the login's shape before anything is sent to a server.
pub fn validate_login(login: &str) -> Result<(), Failure> {
    if login.is_empty() {
        return Err(Failure::BadRequest("empty login".into()));
    }
    if login.len() > MAX_LOGIN_LEN {
        return Err(Failure::BadRequest(format!(
            "login longer than {MAX_LOGIN_LEN} bytes"
        )));
    }
    if login.chars().any(|c| c.is_control()) {
        return Err(Failure::BadRequest("control character in login".into()));
    }
    if login.trim() != login {
        return Err(Failure::BadRequest(
            "login starts or ends with a space".into(),
        ));
    }
    Ok(())
}

/// Expand `%u` (user), `%n` (local part), `%d` (domain) and `%%` in a home template.
pub fn expand_home(template: &str, user: &str) -> String {
    let (local, domain) = user.split_once('@').unwrap_or((user, ""));
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(user),
            Some('n') => out.push_str(local),
            Some('d') => out.push_str(domain),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The attributes read from a user's entry.
pub fn wanted_attributes(cfg: &Config) -> Vec<&str> {
    let mut a = vec![cfg.ldap.username_field.as_str(), "displayName", "cn"];
    if let Some(f) = &cfg.ldap.attribute_field {
        a.push(f);
    }
    if let Some(f) = &cfg.provisioning.mail_field {
        a.push(f);
    }
    a
}

/// The template for an entry: the first mapping, in configured order, whose
/// value equals any value of the attribute field; else the default template.
/// Returns the template and the value that selected it (`None` for the default).
pub fn choose_template<'a>(
    cfg: &'a Config,
    entry: &UserEntry,
) -> Option<(&'a str, Option<&'a str>)> {
    if let Some(field) = &cfg.ldap.attribute_field {
        let values = entry.values(field);
        for m in &cfg.mappings {
            if values.iter().any(|v| v == &m.attribute) {
                return Some((m.template.as_str(), Some(m.attribute.as_str())));
            }
        }
    }
    cfg.provisioning
        .default_template
        .as_deref()
        .map(|t| (t, None))
}

/// Decide one request. `deadline` bounds the whole of it.
pub fn decide(cfg: &Config, req: &Request, deadline: Instant, trace: &mut dyn Trace) -> Decision {
    let mut host = None;
    let mut entry = None;
    let result = decide_inner(cfg, req, deadline, trace, &mut host, &mut entry);
    Decision {
        result,
        host,
        entry,
    }
}

fn decide_inner(
    cfg: &Config,
    req: &Request,
    deadline: Instant,
    trace: &mut dyn Trace,
    host: &mut Option<String>,
    found_entry: &mut Option<UserEntry>,
) -> Result<Accepted, Failure> {
    validate_login(&req.login)?;
    let password = match req.kind {
        RequestKind::Lookup => None,
        RequestKind::Password => match &req.password {
            Some(p) if !p.is_empty() => Some(p),
            // Never bind with an empty password: it is an "unauthenticated" bind.
            _ => return Err(Failure::BadRequest("empty password".into())),
        },
    };
    let attrs = wanted_attributes(cfg);
    let mut dir = Directory::new(&cfg.ldap, &cfg.state_dir, deadline);
    let Found { entry, host: h } = dir.find_user(&req.login, password, &attrs, trace)?;
    *host = Some(h.label());
    let user = req.login.to_lowercase();
    *found_entry = Some(entry);
    Ok(Accepted {
        fields: UserFields {
            uid: cfg.dovecot.uid.clone(),
            gid: cfg.dovecot.gid.clone(),
            home: expand_home(&cfg.dovecot.home, &user),
            quota_bytes: None,
        },
        user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_expansion() {
        assert_eq!(
            expand_home("/var/vmail/%d/%n", "jo@ex.org"),
            "/var/vmail/ex.org/jo"
        );
        assert_eq!(expand_home("/h/%u/%%/%x", "jo"), "/h/jo/%/%x");
        assert_eq!(expand_home("/h/%d", "jo"), "/h/");
        assert_eq!(expand_home("/h/%", "jo"), "/h/%");
    }

    #[test]
    fn login_shape() {
        assert!(validate_login("jo@example.org").is_ok());
        assert!(validate_login("Jö Doe").is_ok());
        assert!(matches!(validate_login(""), Err(Failure::BadRequest(_))));
        assert!(matches!(
            validate_login("a\nb"),
            Err(Failure::BadRequest(_))
        ));
        assert!(matches!(validate_login(" a"), Err(Failure::BadRequest(_))));
        assert!(matches!(
            validate_login(&"a".repeat(257)),
            Err(Failure::BadRequest(_))
        ));
    }

    #[test]
    fn quota_rule_only_when_set() {
        let mut f = UserFields {
            uid: "1".into(),
            gid: "2".into(),
            home: "/h".into(),
            quota_bytes: None,
        };
        assert_eq!(f.pairs().len(), 3);
        f.quota_bytes = Some(0);
        assert_eq!(f.pairs().len(), 3);
        f.quota_bytes = Some(1024);
        assert_eq!(f.pairs()[3], ("quota_rule", "*:bytes=1024".to_owned()));
    }
}
