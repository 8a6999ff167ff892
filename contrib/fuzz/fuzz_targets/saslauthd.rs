//! saslauthd's socket frames (four length-prefixed fields): never a panic;
//! an accepted request has a non-empty login and password.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::serve::saslauthd::read_request;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    if let Ok(req) = read_request(&mut r) {
        assert!(!req.login.is_empty());
        assert!(!req.password.is_empty());
    }
});
