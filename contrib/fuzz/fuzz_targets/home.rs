//! The home template (`%u`, `%n`, `%d`, `%%`). Input: template and user split
//! at the first NUL. Properties: no panic; without `%` the template is kept.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::auth::expand_home;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, user) = text.split_once('\0').unwrap_or((text, "jo@example.org"));
    let out = expand_home(template, user);
    if !template.contains('%') {
        assert_eq!(out, template);
    }
});
