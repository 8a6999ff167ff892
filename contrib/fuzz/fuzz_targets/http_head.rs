//! serve's HTTP request head: never a panic; a parsed head's body start is
//! what follows the blank line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::serve::http::parse_head;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(req)) = parse_head(data) {
        assert!(req.body_start.len() < data.len());
        assert!(data.ends_with(&req.body_start));
        for (name, _) in &req.headers {
            assert!(!name.contains(':') && !name.contains(' '));
        }
    }
});
