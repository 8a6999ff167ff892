//! The admin's filter template and the login expanded into it. Input: filter
//! and login separated by the first NUL. Properties: a login never brings a
//! parenthesis, `*`, `\` or NUL of its own into the filter (RFC 4515 escaping),
//! and expanding is one pass (the login's own `%s` stays literal).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::config::{parse_filter, FilterTemplate};
use mailcow_ldap_auth::directory::user_filter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (filter, login) = text.split_once('\0').unwrap_or((text, "jo"));
    let Ok(template) = parse_filter(filter) else { return };
    let out = user_filter(&template, "mail", login);
    // The same template with a harmless login: the login may change only
    // the parts between placeholders, never the filter's structure.
    let plain = user_filter(&template, "mail", "x");
    let structure = |s: &str| s.chars().filter(|c| matches!(c, '(' | ')')).count();
    assert_eq!(structure(&out), structure(&plain), "{filter:?} {login:?} -> {out}");
    if let FilterTemplate::And { .. } = template {
        assert!(out.ends_with(')'));
    }
});
