//! Dovecot's fd-3 credentials (`user \0 password \0 timestamp \0`): never a
//! panic, and an accepted parse is a user within the protocol's limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::checkpassword::parse_input;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = parse_input(data) {
        assert!(c.user.len() <= data.len());
        assert!(!c.user.contains('\0'));
    }
});
