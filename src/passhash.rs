//! mailcow's password hashes, verified as mailcow's `verify_hash()` does
//! (`data/web/inc/functions.inc.php`): a `{SCHEME}` prefix, then the hash in
//! Dovecot's format for that scheme. Used for app passwords (`app_passwd`)
//! and the SQL password of `mailcow`-authsource mailboxes.
//!
//! Every scheme mailcow writes (`hash_password()`: BLF-CRYPT, SSHA, SSHA256,
//! SSHA512) and those it accepts pre-hashed and verifies: ARGON2I, ARGON2ID,
//! BLF-CRYPT, CRYPT (bcrypt or SHA-crypt), MD5-CRYPT, SHA256-CRYPT,
//! SHA512-CRYPT, CLEAR/CLEARTEXT/PLAIN, PLAIN-MD5, LDAP-MD5, SHA/SHA1,
//! SHA256, SHA512, SMD5, SSHA, SSHA256, SSHA512, PBKDF2 (Dovecot's, SHA-1),
//! PBKDF2-SHA512 (FreeIPA's), PLAIN-MD4, PLAIN-TRUNC. DES-CRYPT (PHP's
//! `password_verify()` on a 13-character DES crypt: 8 significant password
//! characters, 12-bit salt) is not verified and never matches, nor does an
//! unknown scheme, as in mailcow.
//! Comparisons are constant-time; no hash is ever logged.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Whether `password` matches the stored `hash` (`{SCHEME}...`). A malformed
/// or unsupported hash never matches.
pub fn verify(hash: &str, password: &[u8]) -> bool {
    let Some((scheme, body)) = split_scheme(hash) else {
        return false;
    };
    match scheme.as_str() {
        "ARGON2I" | "ARGON2ID" => argon2_verify(body, password),
        "BLF-CRYPT" => bcrypt_verify(body, password),
        "CRYPT" | "MD5" | "MD5-CRYPT" | "SHA256-CRYPT" | "SHA512-CRYPT" => {
            crypt_verify(body, password)
        }
        "CLEAR" | "CLEARTEXT" | "PLAIN" => ct_eq(body.as_bytes(), password),
        // PHP: md5($password) == $hash (lower-case hex).
        "PLAIN-MD5" => ct_eq(
            body.to_ascii_lowercase().as_bytes(),
            hex(&Md5::digest(password)).as_bytes(),
        ),
        "LDAP-MD5" => b64_eq(body, &Md5::digest(password)),
        "SHA" | "SHA1" => b64_eq(body, &Sha1::digest(password)),
        "SHA256" => b64_eq(body, &Sha256::digest(password)),
        "SHA512" => b64_eq(body, &Sha512::digest(password)),
        "SMD5" => salted::<Md5>(body, password, 16),
        "SSHA" => salted::<Sha1>(body, password, 20),
        "SSHA256" => salted::<Sha256>(body, password, 32),
        "SSHA512" => salted::<Sha512>(body, password, 64),
        "PBKDF2" => pbkdf2_sha1_verify(body, password),
        "PBKDF2-SHA512" => pbkdf2_sha512_verify(body, password),
        // PHP: hash_equals(hash('md4', $password), $hash) (lower-case hex).
        "PLAIN-MD4" => ct_eq(body.as_bytes(), hex(&md4::Md4::digest(password)).as_bytes()),
        "PLAIN-TRUNC" => plain_trunc_verify(body, password),
        _ => false,
    }
}

/// Rounds above this are refused (a stored hash must not let a login burn a
/// core for minutes); mailcow's PHP has no bound.
const PBKDF2_MAX_ROUNDS: u32 = 10_000_000;

/// Dovecot's PBKDF2 as mailcow's `verify_hash()` reads it:
/// `$1$<salt>$<rounds>$<hex>`, hex of PBKDF2-HMAC-SHA1 (PHP's `hash_pbkdf2('sha1',
/// $password, $salt, $rounds)`: the salt as written, 20 bytes of output).
fn pbkdf2_sha1_verify(body: &str, password: &[u8]) -> bool {
    let parts: Vec<&str> = body.split('$').collect();
    let (Some(salt), Some(rounds), Some(stored)) = (parts.get(2), parts.get(3), parts.get(4))
    else {
        return false;
    };
    let Some(rounds) = rounds
        .parse::<u32>()
        .ok()
        .filter(|r| (1..=PBKDF2_MAX_ROUNDS).contains(r))
    else {
        return false;
    };
    let mut out = [0u8; 20];
    pbkdf2::pbkdf2_hmac::<Sha1>(password, salt.as_bytes(), rounds, &mut out);
    ct_eq(stored.as_bytes(), hex(&out).as_bytes())
}

/// FreeIPA's `{PBKDF2-SHA512}<iterations>$<base64 salt>$<base64 hash>`, the
/// output as long as the stored hash (mailcow's `verify_hash()`).
fn pbkdf2_sha512_verify(body: &str, password: &[u8]) -> bool {
    let parts: Vec<&str> = body.split('$').collect();
    let [iterations, salt, stored] = parts.as_slice() else {
        return false;
    };
    let Some(rounds) = iterations
        .parse::<u32>()
        .ok()
        .filter(|r| (1..=PBKDF2_MAX_ROUNDS).contains(r))
    else {
        return false;
    };
    let (Ok(salt), Ok(stored)) = (STANDARD.decode(salt), STANDARD.decode(stored)) else {
        return false;
    };
    if stored.is_empty() || stored.len() > 1024 {
        return false;
    }
    let mut out = vec![0u8; stored.len()];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, rounds, &mut out);
    ct_eq(&stored, &out)
}

/// `{PLAIN-TRUNC}<n>-<first n characters>`, else the whole password (mailcow's
/// `verify_hash()`: `substr($password, 0, $n) == $rest`).
fn plain_trunc_verify(body: &str, password: &[u8]) -> bool {
    match body.split_once('-') {
        Some((n, rest)) => match n.parse::<usize>() {
            Ok(n) => ct_eq(rest.as_bytes(), &password[..n.min(password.len())]),
            Err(_) => false,
        },
        None => ct_eq(body.as_bytes(), password),
    }
}

/// `{SCHEME}rest`, the scheme upper-cased (mailcow: `/^{(.+)}(.+)/i`).
fn split_scheme(hash: &str) -> Option<(String, &str)> {
    let rest = hash.strip_prefix('{')?;
    let (scheme, body) = rest.split_once('}')?;
    if scheme.is_empty() || body.is_empty() {
        return None;
    }
    Some((scheme.to_ascii_uppercase(), body))
}

/// Constant-time equality (the length is not hidden).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn b64_eq(body: &str, digest: &[u8]) -> bool {
    STANDARD
        .decode(body.trim())
        .is_ok_and(|stored| ct_eq(&stored, digest))
}

/// mailcow's `verify_salted_hash()`: base64(digest(password + salt) + salt).
fn salted<D: Digest>(body: &str, password: &[u8], len: usize) -> bool {
    let Ok(raw) = STANDARD.decode(body.trim()) else {
        return false;
    };
    if raw.len() <= len {
        return false;
    }
    let (stored, salt) = raw.split_at(len);
    let mut d = D::new();
    d.update(password);
    d.update(salt);
    ct_eq(stored, &d.finalize())
}

fn bcrypt_verify(body: &str, password: &[u8]) -> bool {
    // The bcrypt crate refuses passwords over 72 bytes; PHP truncates them.
    let pw = &password[..password.len().min(72)];
    bcrypt::verify(pw, body).unwrap_or(false)
}

fn argon2_verify(body: &str, password: &[u8]) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(body) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password, &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// PHP's `password_verify()` on a crypt(3) string: `$1$` (MD5-crypt), `$5$`,
/// `$6$` (SHA-crypt), `$2y$`/`$2b$`/`$2a$` (bcrypt).
fn crypt_verify(body: &str, password: &[u8]) -> bool {
    if body.starts_with("$2") {
        return bcrypt_verify(body, password);
    }
    if body.starts_with("$5$") {
        let Ok(pw) = std::str::from_utf8(password) else {
            return false;
        };
        return sha_crypt::sha256_check(pw, body).is_ok();
    }
    if body.starts_with("$6$") {
        let Ok(pw) = std::str::from_utf8(password) else {
            return false;
        };
        return sha_crypt::sha512_check(pw, body).is_ok();
    }
    if let Some(rest) = body.strip_prefix("$1$") {
        let (salt, stored) = rest.split_once('$').unwrap_or((rest, ""));
        let salt = &salt.as_bytes()[..salt.len().min(8)];
        return ct_eq(md5_crypt(password, salt).as_bytes(), stored.as_bytes());
    }
    false
}

const CRYPT_B64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn crypt_b64(out: &mut String, mut v: u32, n: usize) {
    for _ in 0..n {
        out.push(CRYPT_B64[(v & 0x3f) as usize] as char);
        v >>= 6;
    }
}

/// The MD5-crypt digest part (after `$1$salt$`), per Poul-Henning Kamp's
/// algorithm (FreeBSD `crypt-md5.c`, glibc's `md5-crypt.c`).
fn md5_crypt(pw: &[u8], salt: &[u8]) -> String {
    let mut alt = Md5::new();
    alt.update(pw);
    alt.update(salt);
    alt.update(pw);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(b"$1$");
    ctx.update(salt);
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = pw.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();

    for r in 0..1000 {
        let mut c = Md5::new();
        if r & 1 == 1 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if r % 3 != 0 {
            c.update(salt);
        }
        if r % 7 != 0 {
            c.update(pw);
        }
        if r & 1 == 1 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }

    let f = |a: usize, b: usize, c: usize| -> u32 {
        (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c])
    };
    let mut out = String::with_capacity(22);
    crypt_b64(&mut out, f(0, 6, 12), 4);
    crypt_b64(&mut out, f(1, 7, 13), 4);
    crypt_b64(&mut out, f(2, 8, 14), 4);
    crypt_b64(&mut out, f(3, 9, 15), 4);
    crypt_b64(&mut out, f(4, 10, 5), 4);
    crypt_b64(&mut out, u32::from(fin[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_crypt_known_vector() {
        // `openssl passwd -1 -salt saltsalt password`
        assert!(verify(
            "{MD5-CRYPT}$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/",
            b"password"
        ));
        assert!(!verify(
            "{MD5-CRYPT}$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/",
            b"passwore"
        ));
    }

    #[test]
    fn pbkdf2_md4_trunc_as_phps_own_functions() {
        // Written by PHP 8.2 (php-cli): hash_pbkdf2('sha1', ...), hash_pbkdf2('sha512', ..., 64, true), hash('md4', ...).
        let sha1 = "{PBKDF2}$1$c2FsdHk$5000$f1e76abbc13e51bed54e20c36b38e8afe66b4121";
        assert!(verify(sha1, b"Pbkdf2-pw"));
        assert!(!verify(sha1, b"Pbkdf2-px"));
        let sha512 = "{PBKDF2-SHA512}10000$c2FsdC1ieXRlcy0xNnh4$l/7kLg9nrcZWEWD8fG0NML6dptZN82+tDCt6KArHaTOhgx2AXgTM/OKKXm0Mme818mclaV27LuqTh9P61HlC+A==";
        assert!(verify(sha512, b"Sha512-pw"));
        assert!(!verify(sha512, b"Sha512-px"));
        let md4 = "{PLAIN-MD4}c354d8ffb61f6cb04151ee73cd40451d";
        assert!(verify(md4, b"Md4-pw"));
        assert!(!verify(md4, b"Md4-px"));
        assert!(verify("{PLAIN-TRUNC}3-abc", b"abcdef"));
        assert!(!verify("{PLAIN-TRUNC}3-abc", b"abxdef"));
        assert!(verify("{PLAIN-TRUNC}abc", b"abc"));
        assert!(verify("{PLAIN-TRUNC}9-abc", b"abc"));
        assert!(!verify("{PLAIN-TRUNC}x-abc", b"abc"));
        // Malformed: never a match, never a panic.
        assert!(!verify("{PBKDF2}$1$salt$0$00", b"x"));
        assert!(!verify("{PBKDF2}$1$salt$99999999999$00", b"x"));
        assert!(!verify("{PBKDF2}$1$salt", b"x"));
        assert!(!verify("{PBKDF2-SHA512}10000$!!$!!", b"x"));
        assert!(!verify("{PBKDF2-SHA512}10000$c2FsdA==$", b"x"));
        assert!(!verify("{PBKDF2-SHA512}1$2$3$4", b"x"));
    }

    #[test]
    fn simple_schemes() {
        assert!(verify("{PLAIN}abc", b"abc"));
        assert!(verify("{cleartext}abc", b"abc"));
        assert!(!verify("{PLAIN}abc", b"abd"));
        // md5("abc")
        assert!(verify(
            "{PLAIN-MD5}900150983cd24fb0d6963f7d28e17f72",
            b"abc"
        ));
        assert!(!verify(
            "{PLAIN-MD5}900150983cd24fb0d6963f7d28e17f72",
            b"abd"
        ));
        assert!(!verify("abc", b"abc"));
        assert!(!verify("{NOPE}abc", b"abc"));
        assert!(!verify("{PLAIN}", b""));
        assert!(!verify("{SSHA256}!!!", b"x"));
        assert!(!verify("{BLF-CRYPT}$2y$05$short", b"x"));
        assert!(!verify("{ARGON2ID}$argon2id$garbage", b"x"));
    }
}
