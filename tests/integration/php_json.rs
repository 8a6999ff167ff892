//! mailcow's `attribute_hash` is the SHA-1 of PHP's `json_encode()` of the
//! template text, so our encoder must produce PHP's bytes exactly. Here it is
//! compared with real PHP (`php-cli`) on a generated corpus: control
//! characters, quotes, slashes, backslashes, non-ASCII in the BMP and above it
//! (surrogate pairs), and the fuzzer's seed corpus for the encoder.

use crate::support::require;
use mailcow_ldap_auth::provision::php_json_string;
use std::io::Write;
use std::process::{Command, Stdio};

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn char(&mut self) -> char {
        let pools: [&[char]; 5] = [
            &[
                '"', '\\', '/', '\n', '\r', '\t', '\u{8}', '\u{c}', '\0', '\u{1f}', '\u{7f}',
            ],
            &[
                'a', 'Z', '0', ' ', '{', '}', ':', ',', '[', ']', '%', '&', '<', '>', '\'',
            ],
            &[
                'é', 'ß', 'Ω', '€', '中', '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffd}',
            ],
            &['😀', '𝄞', '\u{10ffff}', '\u{10000}'],
            &['ａ', 'ｌ', 'ｉ', 'ｃ', 'ｅ'],
        ];
        let pool = pools[(self.next() % pools.len() as u64) as usize];
        pool[(self.next() % pool.len() as u64) as usize]
    }

    fn string(&mut self) -> String {
        let n = (self.next() % 24) as usize;
        (0..n).map(|_| self.char()).collect()
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn our_json_string_encoding_is_phps() {
    let php = require("php", "php-cli");
    let mut corpus: Vec<String> = vec![
        String::new(),
        r#"{"quota":0,"tags":["a/b"],"name":"Jörg \"J\" Müller"}"#.to_owned(),
    ];
    let seeds =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/fuzz/seeds/php_json");
    for entry in std::fs::read_dir(&seeds).expect("contrib/fuzz/seeds/php_json") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(s) = String::from_utf8(bytes) {
            corpus.push(s);
        }
    }
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    corpus.extend((0..3000).map(|_| g.string()));

    // PHP reads one hex-encoded string per line and prints json_encode of each.
    let script =
        r#"while (($l = fgets(STDIN)) !== false) { echo json_encode(hex2bin(trim($l))), "\n"; }"#;
    let mut child = Command::new(php)
        .args(["-n", "-r", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = corpus.iter().map(|s| hex(s) + "\n").collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "php failed");
    let theirs: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(theirs.len(), corpus.len(), "PHP answered every string");
    let mut differ = Vec::new();
    for (s, php_out) in corpus.iter().zip(theirs) {
        let ours = php_json_string(s);
        if ours != php_out {
            differ.push(format!("{s:?}: ours {ours} PHP {php_out}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        corpus.len(),
        differ[..differ.len().min(10)].join("\n")
    );
}
