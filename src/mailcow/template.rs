//! `templates` (type 'mailbox'): mailcow's mailbox templates, and the
//! `attribute_hash` that tells a mailbox was set from a template's current text.

use super::{row, Store};
use crate::outcome::Failure;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use std::collections::HashMap;

/// A mailbox template (`templates`, type 'mailbox').
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    /// The `attributes` column exactly as stored (the attribute hash is taken over it).
    pub text: String,
    pub attributes: Map<String, Value>,
    /// mailcow's `attribute_hash` of `text`, computed once.
    pub hash: String,
}

impl Template {
    /// A template from its stored row (`attributes` NULL reads as `{}`).
    pub fn new(name: String, text: Option<String>) -> Template {
        let text = text.unwrap_or_else(|| "{}".into());
        let attributes = serde_json::from_str(&text).unwrap_or_default();
        let hash = template_hash(&text);
        Template {
            name,
            text,
            attributes,
            hash,
        }
    }
}

/// The marker that tells "template changed since this mailbox was last set
/// from it", computed exactly as mailcow does so both tools agree:
/// `sha1(json_encode($template['attributes']))` in PHP, where the argument is
/// the column's *text*, so the hash covers that text encoded as a JSON string
/// literal with PHP's default escaping (functions.mailbox.inc.php,
/// `mailbox_from_template`).
pub fn template_hash(template_text: &str) -> String {
    let digest = Sha1::digest(php_json_string(template_text).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// PHP's `json_encode($string)` with default flags: quotes, `\\`, `\/`,
/// short escapes for control characters, and every non-ASCII character as
/// lower-case `\uXXXX` (UTF-16, surrogate pairs above U+FFFF).
pub fn php_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const ALL: &str = "SELECT template, attributes FROM templates WHERE type = 'mailbox' ORDER BY id";

fn read(mut r: row::Columns) -> Result<Template, super::error::StoreError> {
    Ok(Template::new(r.next("template")?, r.next("attributes")?))
}

impl Store {
    /// A mailbox template by name.
    pub fn template(&mut self, name: &str) -> Result<Option<Template>, Failure> {
        self.on_conn("reading the template", |c| {
            row::first(
                c,
                "templates",
                "SELECT template, attributes FROM templates WHERE type = 'mailbox' AND template = ? ORDER BY id LIMIT 1",
                (name,),
            )?
            .map(read)
            .transpose()
        })
    }

    /// Names of every mailbox template.
    pub fn template_names(&mut self) -> Result<Vec<String>, Failure> {
        self.on_conn("listing templates", |c| {
            row::all_text(
                c,
                "templates",
                "SELECT template FROM templates WHERE type = 'mailbox' ORDER BY id",
            )?
            .into_iter()
            .map(|mut r| r.next("template"))
            .collect()
        })
    }

    /// Every mailbox template, by name (the first of each name).
    pub fn templates(&mut self) -> Result<HashMap<String, Template>, Failure> {
        self.on_conn("reading templates", |c| {
            let mut map = HashMap::new();
            for r in row::all_text(c, "templates", ALL)? {
                let t = read(r)?;
                map.entry(t.name.clone()).or_insert(t);
            }
            Ok(map)
        })
    }
}
