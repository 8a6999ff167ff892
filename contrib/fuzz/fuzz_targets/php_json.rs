//! The PHP-compatible JSON string encoder behind mailcow's attribute_hash.
//! Reference properties of PHP's json_encode with default flags: the output
//! is ASCII, decodes back to the input, escapes every `/`, and writes every
//! character above U+007F as \uXXXX. (tests/integration/php_json.rs compares
//! it with real PHP on a generated corpus.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::provision::php_json_string;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let out = php_json_string(s);
    assert!(out.is_ascii());
    let back: String = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(back, s);
    assert!(!out.contains('/') || out.matches("\\/").count() == s.matches('/').count());
    let non_ascii: usize = s.chars().filter(|c| !c.is_ascii()).map(char::len_utf16).sum();
    assert!(out.matches("\\u").count() >= non_ascii);
});
