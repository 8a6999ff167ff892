//! The config loader on arbitrary text: parsing and validation never panic,
//! and every refusal is one line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::config::{parse_str, UiSettings};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_str(text) {
        Err(e) => assert!(!e.contains('\n'), "{e}"),
        Ok(raw) => {
            if let Err(e) = raw.validate(Path::new("fuzz.toml"), UiSettings::default()) {
                assert!(!e.message.contains('\n'), "{}", e.message);
            }
        }
    }
});
