//! Active Directory's result-49 diagnostic text: the `data` code is parsed,
//! never a panic, and what is taken is a short hex code, never the text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::directory::{ad_data_code, ad_reason};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(code) = ad_data_code(text) {
        assert!(!code.is_empty() && code.len() <= 8);
        assert!(code.chars().all(|c| c.is_ascii_hexdigit()));
        let _ = ad_reason(&code);
    }
});
