//! Mailboxes from templates: which template a directory entry gets, what a
//! new mailbox looks like, when an existing one needs an update, and whether
//! a domain has room. The functions here are pure; [`crate::mailcow::Store`]
//! writes what they decide, and the rows it writes are its types (re-exported here).

use crate::config::Config;
use crate::directory::UserEntry;
use crate::mailcow::{MailboxRow, Template};
use crate::outcome::{Failure, Reason};
use serde_json::{Map, Value};

pub use crate::cronlog::RateLimit;
pub use crate::mailcow::{
    check_domain_room, mailbox_quota, php_json_string, template_hash, MailboxUpdate, NewMailbox,
    MIB,
};

/// Flags mailcow's `mailbox('add', 'mailbox')` (functions.mailbox.inc.php)
/// writes into `attributes` as `strval(intval(<template value>))`, with the
/// value it takes when the template has none (`$MAILBOX_DEFAULT_ATTRIBUTES`,
/// vars.inc.php). `force_pw_update` is not among them: for an LDAP mailbox
/// mailcow always writes "0".
pub const FLAG_KEYS: &[(&str, &str)] = &[
    ("force_tfa", "0"),
    ("tls_enforce_in", "0"),
    ("tls_enforce_out", "0"),
    ("sogo_access", "1"),
    ("imap_access", "1"),
    ("pop3_access", "1"),
    ("smtp_access", "1"),
    ("sieve_access", "1"),
    ("eas_access", "1"),
    ("dav_access", "1"),
];

/// Text values written as `strval(<template value>)`, with mailcow's defaults.
pub const TEXT_KEYS: &[(&str, &str)] = &[
    ("quarantine_notification", "hourly"),
    ("quarantine_category", "reject"),
];

/// `user_acl` columns mailcow sets on creation and on update: 1 when the
/// template's `acl_<column>` is on, else 0 — `pw_reset` too, so a template
/// without `acl_pw_reset` (the shipped Default) gives 0, not the column's
/// default 1 (mailbox('add', 'mailbox') gets the template's ACLs as a list;
/// acl('edit', 'user') sets every column not in it to 0).
pub const ACL_SET_ON_CREATE: &[&str] = &[
    "spam_alias",
    "tls_policy",
    "spam_score",
    "spam_policy",
    "delimiter_action",
    "syncjobs",
    "eas_reset",
    "sogo_profile_reset",
    "pushover",
    "quarantine",
    "quarantine_attachments",
    "quarantine_notification",
    "quarantine_category",
    "app_passwds",
    "pw_reset",
];

/// A template value as mailcow's flag strings: true/1 -> "1", false/0 -> "0".
fn flag_string(v: &Value) -> String {
    match v {
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// PHP's `intval()` of a decoded JSON value: the leading integer of a
/// string, 1/0 for booleans, 0 for anything else.
pub fn php_intval(v: &Value) -> i64 {
    match v {
        Value::Bool(b) => i64::from(*b),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        Value::String(s) => {
            let t = s.trim_start();
            let (sign, digits) = match t.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None => (1, t.strip_prefix('+').unwrap_or(t)),
            };
            let d: String = digits.chars().take_while(char::is_ascii_digit).collect();
            d.parse::<i64>().map(|n| sign * n).unwrap_or(0)
        }
        _ => 0,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        Value::String(s) => !matches!(s.as_str(), "" | "0" | "false"),
        _ => false,
    }
}

/// Template quota in bytes (0 = unlimited).
pub fn template_quota(t: &Template) -> u64 {
    match t.attributes.get("quota") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// The ACL a template grants: every column mailcow sets, off unless the
/// template's `acl_<column>` is on (mailcow: `$value != 0`).
pub fn template_acl(t: &Template) -> Vec<(String, bool)> {
    let on = |c: &str| t.attributes.get(&format!("acl_{c}")).is_some_and(truthy);
    ACL_SET_ON_CREATE
        .iter()
        .map(|c| ((*c).to_owned(), on(c)))
        .collect()
}

/// The template's rate limit as mailcow applies it: only when the template
/// has both `rl_value` and `rl_frame`, the frame one of s, m, h, d (else
/// mailcow refuses it and leaves Redis alone); `intval(rl_value)` 0 clears.
pub fn template_rate_limit(t: &Template) -> Option<RateLimit> {
    let value = t.attributes.get("rl_value")?;
    let frame = match t.attributes.get("rl_frame")? {
        Value::String(s) if matches!(s.as_str(), "s" | "m" | "h" | "d") => s.clone(),
        _ => return None,
    };
    Some(match php_intval(value) {
        0 => RateLimit::Clear,
        n => RateLimit::Set(format!("{n} / 1{frame}")),
    })
}

pub fn template_tags(t: &Template) -> Vec<String> {
    match t.attributes.get("tags") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| {
                v.as_str()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The `attributes` JSON of a mailbox set from `t`, keeping `keep` (the
/// existing mailbox's attributes) for keys the template does not decide.
/// On creation (`keep` is `None`) these are exactly the keys mailcow's
/// `mailbox('add', 'mailbox')` writes, missing template keys taking mailcow's
/// defaults; on update, as its `mailbox('edit', 'mailbox')`, a key the
/// template lacks keeps the mailbox's value. Both: `force_pw_update` "0" (an
/// LDAP user cannot change the password here) and `recovery_email` present
/// (null unless set).
pub fn mailbox_attributes(
    t: &Template,
    keep: Option<&Map<String, Value>>,
    now: &str,
) -> Map<String, Value> {
    let creating = keep.is_none();
    let mut a = keep.cloned().unwrap_or_default();
    let mut set = |key: &str, from: Option<String>, default: &str| match from {
        Some(v) => {
            a.insert(key.to_owned(), Value::String(v));
        }
        None if creating => {
            a.insert(key.to_owned(), Value::String(default.to_owned()));
        }
        None => {}
    };
    for (key, default) in FLAG_KEYS {
        let v = t.attributes.get(*key).map(|v| php_intval(v).to_string());
        set(key, v, default);
    }
    for (key, default) in TEXT_KEYS {
        set(key, t.attributes.get(*key).map(flag_string), default);
    }
    a.insert("force_pw_update".into(), Value::String("0".into()));
    a.entry("recovery_email").or_insert(Value::Null);
    a.entry("mailbox_format")
        .or_insert_with(|| Value::String("maildir:".into()));
    a.entry("relayhost")
        .or_insert_with(|| Value::String("0".into()));
    a.entry("passwd_update")
        .or_insert_with(|| Value::String(now.to_owned()));
    a.insert("attribute_hash".into(), Value::String(t.hash.clone()));
    a
}

/// The display name from the entry: displayName, else cn, else the local
/// part; cut to the width of mailcow's column.
pub fn display_name(entry: &UserEntry, address: &str) -> String {
    let name = entry
        .first("displayName")
        .or_else(|| entry.first("cn"))
        .unwrap_or_else(|| address.split('@').next().unwrap_or(address));
    cut_chars(name, MAILBOX_NAME_CHARS)
}

/// The width of mailcow's `mailbox.name` column, in characters (`VARCHAR(255)`,
/// utf8mb4; mailcow's `init_db.inc.php`). AD allows 256 in displayName.
pub const MAILBOX_NAME_CHARS: usize = 255;

/// `s` cut to at most `max` characters, never inside one.
pub fn cut_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// Lower-case an address and convert its domain to ASCII (IDNA).
pub fn normalize_address(addr: &str) -> Result<String, Failure> {
    let addr = addr.trim().to_lowercase();
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Err(Failure::Denied(format!("\"{addr}\" is not a mail address")));
    };
    if local.is_empty() || domain.is_empty() {
        return Err(Failure::Denied(format!("\"{addr}\" is not a mail address")));
    }
    let ascii = idna::domain_to_ascii(domain)
        .map_err(|_| Failure::Denied(format!("\"{domain}\" is not a valid domain name")))?;
    Ok(format!("{local}@{ascii}"))
}

/// The addresses `entry`'s `alias_attributes` name as aliases of the
/// mailbox `own`, each once and in order, with a word on each value skipped
/// as not an address (for a warning; values of other types are skipped
/// silently). A value may carry a type (`SMTP:a@x`, AD's `proxyAddresses`:
/// upper case marks the primary address, lower case the others): only type
/// `smtp` (any case) is mail; `X500:`, `SIP:`, `x400:` and the like are not.
/// Values are lower-cased with the domain in ASCII ([`normalize_address`]);
/// the mailbox's own address is skipped.
pub fn directory_aliases(
    attributes: &[String],
    entry: &UserEntry,
    own: &str,
) -> (Vec<String>, Vec<String>) {
    let mut out: Vec<String> = Vec::new();
    let mut invalid = Vec::new();
    for attr in attributes {
        for value in entry.values(attr) {
            let v = value.trim();
            let addr = match v.split_once(':') {
                Some((kind, rest)) if kind.eq_ignore_ascii_case("smtp") => rest,
                // Another type (`X500:/o=...`, `SIP:a@x`): not a mail address.
                Some(_) => continue,
                None => v,
            };
            match normalize_address(addr).ok().filter(|a| valid_address(a)) {
                Some(a) if a == own || out.contains(&a) => {}
                Some(a) => out.push(a),
                None => invalid.push(format!(
                    "{attr}: \"{}\" is not a mail address",
                    cut_chars(v, 80)
                )),
            }
        }
    }
    (out, invalid)
}

/// A normalised address mailcow's alias form would take (PHP's
/// `FILTER_VALIDATE_EMAIL` in mailbox('add', 'alias'), for the usual
/// cases): a dot-atom local part of at most 64 bytes, an ASCII domain of
/// dotted labels of letters, digits and inner hyphens.
pub fn valid_address(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(atext));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// The login as a mailbox name, if it looks like an address (used to look up
/// the mailbox before asking the directory).
pub fn login_as_address(login: &str) -> Option<String> {
    login
        .contains('@')
        .then(|| normalize_address(login).ok())
        .flatten()
}

/// A login or attribute value in the form they are compared in: NFKC, case
/// folded, NFKC again (Unicode's NFKC_Casefold but for its removal of
/// default-ignorable code points), so that width and case never make two
/// users of one entry, as they don't for Active Directory's matching.
pub fn fold(s: &str) -> String {
    let nfkc = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc();
    let once = nfkc.normalize(s);
    let folded = icu_casemap::CaseMapper::new().fold_string(&once);
    nfkc.normalize(&folded).into_owned()
}

/// The directory's own spelling of the user: `mail_field`'s first value when
/// set, else the `username_field` value that equals the login under
/// [`fold`]; never the typed text. A directory whose matching let the login
/// through although no value equals it is refused, naming the fix.
pub fn directory_user(cfg: &Config, entry: &UserEntry, login: &str) -> Result<String, Failure> {
    match &cfg.provisioning.mail_field {
        Some(f) => entry.first(f).map(str::to_owned).ok_or_else(|| {
            Failure::Denied(format!(
                "the entry has no {f} (provisioning.mail_field): no mailbox address"
            ))
        }),
        None => {
            let field = &cfg.ldap.username_field;
            let want = fold(login);
            entry
                .values(field)
                .iter()
                .find(|v| fold(v) == want)
                .cloned()
                .ok_or_else(|| {
                    Failure::Denied(format!(
                        "the directory matched this login to an entry whose {field} values do not include it: set provisioning.mail_field"
                    ))
                })
        }
    }
}

/// The user Dovecot gets when there is no database: [`directory_user`],
/// lower-cased (an address also with its domain in ASCII).
pub fn canonical_user(cfg: &Config, entry: &UserEntry, login: &str) -> Result<String, Failure> {
    let raw = directory_user(cfg, entry, login)?;
    if raw.contains('@') {
        if let Ok(a) = normalize_address(&raw) {
            return Ok(a);
        }
    }
    Ok(raw.trim().to_lowercase())
}

/// The mailbox address of a directory entry: [`directory_user`], which must
/// be a mail address.
pub fn canonical_address(cfg: &Config, entry: &UserEntry, login: &str) -> Result<String, Failure> {
    let raw = directory_user(cfg, entry, login)?;
    normalize_address(&raw).map_err(|_| {
        Failure::Denied(format!(
            "\"{raw}\" is not a mail address: set provisioning.mail_field to the attribute holding the address"
        ))
    })
}

/// Whether `service` may be used by the mailbox: `<service>_access` "0" refuses it.
pub fn service_allowed(row: &MailboxRow, service: Option<&str>) -> Result<(), Failure> {
    let Some(flag) = service.and_then(access_flag) else {
        return Ok(());
    };
    match row.attr(&flag).as_deref() {
        // PHP's loose `!= '1'`: 1, "1" and true allow.
        Some("1" | "true") | None => Ok(()),
        Some(_) => Err(Failure::NoLogin(
            Reason::ServiceNotAllowed,
            format!("{flag} is off for this mailbox"),
        )),
    }
}

/// The mailbox attribute that allows `service`, as mailcow names it: the
/// lower-cased service name + `_access` (`user_login()` in mailcow's
/// `data/web/inc/functions.auth.inc.php`), with Dovecot's names for the same
/// protocols folded in (`managesieve` is sieve, `submission` is smtp). Any
/// service is checked this way (`eas`, `dav`, `sogo` too), and a flag the
/// mailbox does not carry allows it, as in mailcow. `None`: no service given.
pub fn access_flag(service: &str) -> Option<String> {
    let s = service.trim().to_ascii_lowercase();
    let s = match s.as_str() {
        "" | "none" => return None,
        "managesieve" => "sieve",
        "submission" => "smtp",
        other => other,
    };
    Some(format!("{s}_access"))
}

/// Whether a login may proceed for an existing mailbox (active 1, domain
/// active, service). Active 2 ("disallow login", mail still received) is refused.
pub fn login_allowed(row: &MailboxRow, service: Option<&str>) -> Result<(), Failure> {
    if row.active == 2 {
        return Err(Failure::NoLogin(
            Reason::LoginDisabled,
            "mailbox is set to \"disallow login\" (active = 2: it receives mail, no login)".into(),
        ));
    }
    if !row.may_log_in() {
        return Err(Failure::Denied("mailbox is inactive".into()));
    }
    domain_and_service(row, service)
}

/// Whether Dovecot's userdb lookup is answered (delivery, `doveadm`): active
/// 1 or 2 and the domain active, as mailcow's `user_query`.
pub fn lookup_allowed(row: &MailboxRow) -> Result<(), Failure> {
    if !row.receives_mail() {
        return Err(Failure::Denied("mailbox is inactive".into()));
    }
    domain_and_service(row, None)
}

fn domain_and_service(row: &MailboxRow, service: Option<&str>) -> Result<(), Failure> {
    match row.domain_active {
        None => {
            return Err(Failure::Denied(format!(
                "domain {} does not exist",
                row.domain
            )))
        }
        Some(false) => {
            return Err(Failure::Denied(format!(
                "domain {} is inactive",
                row.domain
            )))
        }
        Some(true) => {}
    }
    service_allowed(row, service)
}

/// A new mailbox for `address` from template `t`.
pub fn new_mailbox(address: &str, name: &str, t: &Template, now: &str) -> NewMailbox {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    // mailcow: `intval($_data['active'])` from the template (mailbox('add',
    // 'mailbox'), functions.mailbox.inc.php): 0 off, 1 on, 2 "disallow login".
    let active = t
        .attributes
        .get("active")
        .map(php_intval)
        .filter(|a| (0..=2).contains(a))
        .unwrap_or(1);
    NewMailbox {
        username: address.to_owned(),
        local_part: local.to_owned(),
        domain: domain.to_owned(),
        name: name.to_owned(),
        attributes: mailbox_attributes(t, None, now),
        active,
        template_quota: template_quota(t),
        acl: template_acl(t),
        tags: template_tags(t),
        template: t.name.clone(),
        rate_limit: template_rate_limit(t),
    }
}

/// What an existing `ldap` mailbox needs: `None` when nothing changed.
/// `template` is the mapped template (if a mapping matched and it exists).
pub fn plan_update(
    row: &MailboxRow,
    name: &str,
    template: Option<&Template>,
    now: &str,
) -> Option<MailboxUpdate> {
    let template_changed =
        template.is_some_and(|t| row.attr("attribute_hash").as_deref() != Some(t.hash.as_str()));
    let name_changed = row.name != name;
    if !template_changed && !name_changed {
        return None;
    }
    Some(match template.filter(|_| template_changed) {
        Some(t) => MailboxUpdate {
            username: row.username.clone(),
            name: name.to_owned(),
            quota: mailbox_quota(template_quota(t)),
            attributes: mailbox_attributes(t, Some(&row.attributes), now),
            acl: Some(template_acl(t)),
            tags: Some(template_tags(t)),
            rate_limit: template_rate_limit(t),
        },
        None => MailboxUpdate {
            username: row.username.clone(),
            name: name.to_owned(),
            quota: row.quota,
            attributes: row.attributes.clone(),
            acl: None,
            tags: None,
            rate_limit: None,
        },
    })
}

/// Current UTC time as `YYYY-MM-DD HH:MM:SS`, the format mailcow stores.
pub fn sql_datetime(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailcow::DomainRow;

    fn template(text: &str) -> Template {
        Template::new("T".into(), Some(text.into()))
    }

    fn domain(count: i64, used_mib: u64) -> DomainRow {
        DomainRow {
            domain: "ex.org".into(),
            active: true,
            max_mailboxes: 10,
            defquota_mib: 100,
            maxquota_mib: 1000,
            quota_mib: 2000,
            mailbox_count: count,
            quota_used_bytes: used_mib * MIB,
        }
    }

    #[test]
    fn php_json_encoding_of_the_template_text() {
        assert_eq!(php_json_string(r#"{"a":"b/c"}"#), r#""{\"a\":\"b\/c\"}""#);
        assert_eq!(
            php_json_string("é€😀\n\u{1}"),
            r#""\u00e9\u20ac\ud83d\ude00\n\u0001""#
        );
        assert_eq!(php_json_string("a\\b"), r#""a\\b""#);
    }

    #[test]
    fn hash_matches_php() {
        // Known answer, computed independently as
        // sha1(b'"{\\"quota\\":0,\\"a\\":\\"x\\/y\\"}"'), i.e. PHP's
        // sha1(json_encode('{"quota":0,"a":"x/y"}')).
        assert_eq!(
            template_hash(r#"{"quota":0,"a":"x/y"}"#),
            "222000a0d1275710d77199890b6b5e4c6ab0869a"
        );
    }

    #[test]
    fn attributes_from_template() {
        let t = template(
            r#"{"quota":1073741824,"imap_access":1,"pop3_access":0,"acl_spam_alias":1,"acl_syncjobs":0,"acl_bogus":1,"tags":["a"," b",""],"active":1}"#,
        );
        let a = mailbox_attributes(&t, None, "2026-01-01 00:00:00");
        assert_eq!(a["imap_access"], "1");
        assert_eq!(a["pop3_access"], "0");
        // Keys the template lacks take mailcow's defaults on creation.
        assert_eq!(
            (&a["eas_access"], &a["dav_access"], &a["force_tfa"]),
            (&Value::from("1"), &Value::from("1"), &Value::from("0"))
        );
        assert_eq!(a["force_pw_update"], "0");
        assert_eq!(a["recovery_email"], Value::Null);
        let denying =
            template(r#"{"eas_access":0,"dav_access":"0","force_tfa":true,"force_pw_update":1}"#);
        let mut kept = a.clone();
        kept.insert("recovery_email".into(), "me@home.example".into());
        let b = mailbox_attributes(&denying, Some(&kept), "later");
        assert_eq!(
            (&b["eas_access"], &b["dav_access"], &b["force_tfa"]),
            (&Value::from("0"), &Value::from("0"), &Value::from("1"))
        );
        assert_eq!(b["force_pw_update"], "0", "never asked of an LDAP user");
        assert_eq!(b["recovery_email"], "me@home.example");
        assert_eq!(b["imap_access"], "1", "kept: the template does not name it");
        assert_eq!(b["passwd_update"], "2026-01-01 00:00:00");
        assert_eq!(a["mailbox_format"], "maildir:");
        assert_eq!(a["attribute_hash"], Value::String(template_hash(&t.text)));
        assert_eq!(template_quota(&t), 1_073_741_824);
        let acl = template_acl(&t);
        assert_eq!(acl.len(), ACL_SET_ON_CREATE.len());
        assert!(acl.contains(&("spam_alias".into(), true)));
        assert!(acl.contains(&("syncjobs".into(), false)));
        assert!(
            acl.contains(&("pushover".into(), false)),
            "unnamed columns are off, as in mailcow"
        );
        assert!(!acl.iter().any(|(c, _)| c == "bogus"));
        assert!(
            acl.contains(&("pw_reset".into(), false)),
            "no acl_pw_reset: 0, as in mailcow"
        );
        assert_eq!(template_tags(&t), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(new_mailbox("jo@ex.org", "Jo", &t, "now").active, 1);
        assert_eq!(
            new_mailbox("jo@ex.org", "Jo", &template(r#"{"active":"0"}"#), "now").active,
            0
        );
        assert_eq!(
            new_mailbox("jo@ex.org", "Jo", &template(r#"{"active":2}"#), "now").active,
            2
        );
        assert_eq!(
            new_mailbox("jo@ex.org", "Jo", &template(r#"{"active":"2"}"#), "now").active,
            2
        );
    }

    #[test]
    fn rate_limits_as_mailcow_writes_them() {
        let rl = |text: &str| template_rate_limit(&template(text));
        assert_eq!(
            rl(r#"{"rl_value":"10","rl_frame":"m"}"#),
            Some(RateLimit::Set("10 / 1m".into()))
        );
        assert_eq!(
            rl(r#"{"rl_value":250,"rl_frame":"h"}"#),
            Some(RateLimit::Set("250 / 1h".into()))
        );
        // The shipped Default template: rl_value "" clears.
        assert_eq!(
            rl(r#"{"rl_value":"","rl_frame":"s"}"#),
            Some(RateLimit::Clear)
        );
        assert_eq!(rl(r#"{"rl_value":"5","rl_frame":"w"}"#), None);
        assert_eq!(rl(r#"{"rl_value":"5"}"#), None);
        assert_eq!(rl(r#"{}"#), None);
    }

    #[test]
    fn domain_room_checks() {
        // 0 is unlimited, as in mailcow: never the domain's defquota (100 MiB here).
        assert_eq!(
            check_domain_room("ex.org", 0, Some(&domain(0, 0))).unwrap(),
            0
        );
        assert_eq!(
            check_domain_room("ex.org", 5 * MIB + 17, Some(&domain(0, 0))).unwrap(),
            5 * MIB,
            "whole MiB, rounded down, as mailcow's intval()"
        );
        assert_eq!(
            check_domain_room("ex.org", 5 * MIB, Some(&domain(9, 0))).unwrap(),
            5 * MIB
        );
        assert!(check_domain_room("ex.org", 0, None)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        assert!(check_domain_room("ex.org", 0, Some(&domain(10, 0)))
            .unwrap_err()
            .to_string()
            .contains("Max. possible"));
        assert!(check_domain_room("ex.org", 1001 * MIB, Some(&domain(0, 0)))
            .unwrap_err()
            .to_string()
            .contains("maximum"));
        assert!(
            check_domain_room("ex.org", 500 * MIB, Some(&domain(1, 1600)))
                .unwrap_err()
                .to_string()
                .contains("left")
        );
        assert!(check_domain_room("ex.org", 400 * MIB, Some(&domain(1, 1600))).is_ok());
        let mut inactive = domain(0, 0);
        inactive.active = false;
        assert!(check_domain_room("ex.org", 0, Some(&inactive))
            .unwrap_err()
            .to_string()
            .contains("inactive"));
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(normalize_address("Jo@Ex.ORG").unwrap(), "jo@ex.org");
        assert_eq!(
            normalize_address("jo@bücher.de").unwrap(),
            "jo@xn--bcher-kva.de"
        );
        assert!(normalize_address("jo").is_err());
        assert!(normalize_address("@ex.org").is_err());
        assert_eq!(login_as_address("JO@ex.org").as_deref(), Some("jo@ex.org"));
        assert_eq!(login_as_address("jo"), None);
    }

    #[test]
    fn update_planning() {
        let t = template(r#"{"quota":2097152,"imap_access":1}"#);
        let mut row = MailboxRow {
            username: "jo@ex.org".into(),
            name: "Jo".into(),
            domain: "ex.org".into(),
            active: 1,
            authsource: "ldap".into(),
            quota: 1048576,
            attributes: mailbox_attributes(&t, None, "then"),
            domain_active: Some(true),
        };
        assert_eq!(plan_update(&row, "Jo", Some(&t), "now"), None);
        let u = plan_update(&row, "Jo Doe", Some(&t), "now").unwrap();
        assert_eq!(
            (u.name.as_str(), u.quota, u.acl.is_none()),
            ("Jo Doe", 1048576, true)
        );
        let t2 = template(r#"{"quota":4194304,"imap_access":0}"#);
        let u = plan_update(&row, "Jo", Some(&t2), "now").unwrap();
        assert_eq!(u.quota, 4194304);
        let t0 = template(r#"{"quota":0,"imap_access":0}"#);
        assert_eq!(
            plan_update(&row, "Jo", Some(&t0), "now").unwrap().quota,
            0,
            "quota 0 is unlimited on update too, as in mailcow"
        );
        assert_eq!(u.attributes["imap_access"], "0");
        assert_eq!(
            u.attributes["passwd_update"], "then",
            "kept from the mailbox"
        );
        row.attributes = u.attributes;
        assert_eq!(plan_update(&row, "Jo", Some(&t2), "now"), None);
    }

    #[test]
    fn service_flags() {
        let mut row = MailboxRow {
            username: "a@b".into(),
            name: String::new(),
            domain: "b".into(),
            active: 1,
            authsource: "ldap".into(),
            quota: 0,
            attributes: serde_json::from_str(r#"{"pop3_access":"0","smtp_access":"1"}"#).unwrap(),
            domain_active: Some(true),
        };
        assert!(login_allowed(&row, Some("imap")).is_ok());
        assert!(matches!(
            login_allowed(&row, Some("pop3")),
            Err(Failure::NoLogin(Reason::ServiceNotAllowed, _))
        ));
        assert!(login_allowed(&row, Some("submission")).is_ok());
        assert!(login_allowed(&row, Some("lmtp")).is_ok());
        // Every service is checked against its flag, not only the four mail
        // protocols (eas and dav were never checked), in any case.
        row.attributes = serde_json::from_str(
            r#"{"eas_access":"0","dav_access":"1","sieve_access":0,"smtp_access":"0"}"#,
        )
        .unwrap();
        assert!(login_allowed(&row, Some("eas")).is_err());
        assert!(login_allowed(&row, Some("EAS")).is_err());
        assert!(login_allowed(&row, Some("dav")).is_ok());
        assert!(login_allowed(&row, Some("managesieve")).is_err());
        assert!(login_allowed(&row, Some("Submission")).is_err());
        assert!(login_allowed(&row, Some("NONE")).is_ok());
        assert_eq!(access_flag("POP3").as_deref(), Some("pop3_access"));
        assert_eq!(access_flag(""), None);
        row.active = 2;
        assert!(matches!(
            login_allowed(&row, Some("imap")),
            Err(Failure::NoLogin(Reason::LoginDisabled, _))
        ));
        assert!(lookup_allowed(&row).is_ok());
        // Inactive mailbox or domain: no reason is given.
        row.active = 0;
        assert!(matches!(
            login_allowed(&row, Some("imap")),
            Err(Failure::Denied(_))
        ));
        assert!(lookup_allowed(&row).is_err());
        row.active = 1;
        row.domain_active = Some(false);
        assert!(matches!(login_allowed(&row, None), Err(Failure::Denied(_))));
    }

    #[test]
    fn logins_compare_under_nfkc_and_case_folding() {
        assert_eq!(fold("ａｌｉｃｅ"), "alice");
        assert_eq!(fold("ALICE@Corp.Example.ORG"), "alice@corp.example.org");
        assert_eq!(fold("Straße"), fold("STRASSE"));
        assert_eq!(fold("ﬁle"), "file");
        assert_ne!(fold("alice"), fold("alicé"));
    }

    #[test]
    fn the_user_comes_from_the_entry_never_from_the_login() {
        let cfg = crate::config::parse_str(
            "[ldap]\nhosts = \"h\"\nbase_dn = \"dc=x\"\nusername_field = \"userPrincipalName\"\n",
        )
        .unwrap()
        .validate(std::path::Path::new("t"), Default::default())
        .unwrap();
        let mut entry = UserEntry::default();
        entry.attrs.insert(
            "userprincipalname".into(),
            vec!["Alice@Corp.Example.org".into()],
        );
        entry
            .attrs
            .insert("mail".into(), vec!["a.l@corp.example.org".into()]);
        for login in [
            "alice@corp.example.org",
            "ALICE@CORP.EXAMPLE.ORG",
            "ａｌｉｃｅ@corp.example.org",
        ] {
            assert_eq!(
                canonical_user(&cfg, &entry, login).unwrap(),
                "alice@corp.example.org"
            );
        }
        let refused = canonical_user(&cfg, &entry, "alice").unwrap_err();
        assert_eq!(
            refused,
            Failure::Denied("the directory matched this login to an entry whose userprincipalname values do not include it: set provisioning.mail_field".into())
        );
        assert!(canonical_address(&cfg, &entry, "alice").is_err());
        let mut with_mail = cfg.clone();
        with_mail.provisioning.mail_field = Some("mail".into());
        assert_eq!(
            canonical_user(&with_mail, &entry, "alice").unwrap(),
            "a.l@corp.example.org"
        );
        assert_eq!(
            canonical_address(&with_mail, &entry, "x").unwrap(),
            "a.l@corp.example.org"
        );
    }

    #[test]
    fn names_are_cut_at_a_character_boundary() {
        assert_eq!(cut_chars("abc", 5), "abc");
        assert_eq!(cut_chars("abcdef", 3), "abc");
        assert_eq!(cut_chars("ééé", 2), "éé");
        let long = format!("{}{}", "L".repeat(250), "é".repeat(6));
        let mut entry = UserEntry::default();
        entry.attrs.insert("displayname".into(), vec![long.clone()]);
        let name = display_name(&entry, "x@y");
        assert_eq!(name.chars().count(), MAILBOX_NAME_CHARS);
        assert!(long.starts_with(&name));
    }

    #[test]
    fn datetime_format() {
        assert_eq!(sql_datetime(0), "1970-01-01 00:00:00");
        assert_eq!(sql_datetime(1_798_761_599), "2026-12-31 23:59:59");
    }

    #[test]
    fn aliases_from_typed_and_plain_values() {
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert(
            "proxyaddresses".to_owned(),
            vec![
                "SMTP:JDoe@Example.org".to_owned(),
                "smtp:john.doe@example.org".to_owned(),
                "sMtP:jd@Example.NET".to_owned(),
                "X500:/o=Corp/ou=x/cn=jdoe".to_owned(),
                "SIP:jdoe@example.org".to_owned(),
                "x400:c=us;a= ;p=corp".to_owned(),
                "smtp:not an address".to_owned(),
            ],
        );
        attrs.insert(
            "maillocaladdress".to_owned(),
            vec![
                "John.Doe@example.org".to_owned(),
                "j@bücher.example".to_owned(),
            ],
        );
        let entry = UserEntry {
            dn: "cn=x".into(),
            attrs,
        };
        let (aliases, invalid) = directory_aliases(
            &["proxyaddresses".to_owned(), "maillocaladdress".to_owned()],
            &entry,
            "jdoe@example.org",
        );
        assert_eq!(
            aliases,
            [
                "john.doe@example.org",
                "jd@example.net",
                "j@xn--bcher-kva.example"
            ]
        );
        assert_eq!(invalid.len(), 1, "{invalid:?}");
        assert!(invalid[0].contains("not an address"), "{invalid:?}");
        assert!(valid_address("a.b+c@x-y.example"));
        for bad in [
            "a..b@x.org",
            ".a@x.org",
            "a@x",
            "a@-x.org",
            "a b@x.org",
            "@x.org",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
    }
}
