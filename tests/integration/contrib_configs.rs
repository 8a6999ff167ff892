//! Every configuration file shipped under `contrib/` (any `*.toml`, at any
//! depth) loads with the real loader, so the examples admins copy never rot:
//! a renamed or removed key, a changed default range or a new rule in
//! `validate` fails here first.

use mailcow_ldap_auth::config::{parse_str, HostList, RawConfig, RawLdap, UiSettings};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Every `*.toml` below `dir`, sorted. Symlinked folders are not followed.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                // contrib/fuzz is a Rust crate (its Cargo.toml, build output
                // and corpora), not configuration; its config seeds are
                // copies of contrib/config's files.
                if !path.ends_with("contrib/fuzz") {
                    todo.push(path);
                }
            } else if path.extension().is_some_and(|x| x == "toml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Whether a key names a file holding a secret, which `validate` reads.
fn is_secret_file_key(key: &str) -> bool {
    key.ends_with("_file") && (key.contains("password") || key.contains("secret"))
}

/// The config text with every secret-file key (`ldap.bind_password_file`,
/// `database.password_file`, `serve.http_secret_file`, and any later
/// `*password*_file` / `*secret*_file`) that names a file missing here
/// pointed at `stand_in`. Returns the new text and the keys replaced.
///
/// `validate` reads those files (`read_secret_file`: the first line, refused
/// when missing, empty or readable by everyone), and the examples name where
/// an admin keeps them (`/etc/mailcow-ldap-auth/...`), which does not exist on
/// a build machine. Only those paths change; every other key is validated
/// exactly as written. (`ca_file` keys are left alone: `validate` only
/// records them.)
fn with_stand_in_secrets(text: &str, stand_in: &Path) -> (String, Vec<String>) {
    let mut doc: toml::Table = text.parse().expect("parse_str accepted it");
    let mut replaced = Vec::new();
    fn walk(t: &mut toml::Table, at: &str, stand_in: &Path, replaced: &mut Vec<String>) {
        for (k, v) in t.iter_mut() {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(inner, &path, stand_in, replaced),
                toml::Value::Array(items) => {
                    for item in items {
                        if let toml::Value::Table(inner) = item {
                            walk(inner, &path, stand_in, replaced);
                        }
                    }
                }
                toml::Value::String(s)
                    if is_secret_file_key(k) && !s.is_empty() && !Path::new(s).exists() =>
                {
                    *s = stand_in.display().to_string();
                    replaced.push(path);
                }
                _ => {}
            }
        }
    }
    walk(&mut doc, "", stand_in, &mut replaced);
    (toml::to_string(&doc).unwrap(), replaced)
}

/// What mailcow's UI would supply for a file with `settings_from_database =
/// true` that leaves the required LDAP keys to it. Keys in the file win over
/// these (as in `mailcow::load_config`), so a file that sets them is
/// validated with its own values.
fn ui_for(raw: &RawConfig) -> UiSettings {
    if !raw.settings_from_database() {
        return UiSettings::default();
    }
    UiSettings {
        ldap: RawLdap {
            hosts: Some(HostList::One("ldap-from-ui.example.org".into())),
            base_dn: Some("dc=from-ui,dc=example,dc=org".into()),
            ..RawLdap::default()
        },
        ..UiSettings::default()
    }
}

#[test]
fn every_toml_under_contrib_loads_with_the_real_loader() {
    let contrib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let files = toml_files(&contrib);
    assert!(
        !files.is_empty(),
        "no *.toml under {}: the example configs (contrib/config/) are missing",
        contrib.display()
    );

    let tmp = tempfile::TempDir::new().unwrap();
    let secret = tmp.path().join("password");
    std::fs::write(&secret, "stand-in-password\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // As written first, so that an error names the line of the file.
        if let Err(e) = parse_str(&text) {
            failures.push(format!("{}: {e}", file.display()));
            continue;
        }
        let (text, _) = with_stand_in_secrets(&text, &secret);
        let raw = parse_str(&text).unwrap();
        let ui = ui_for(&raw);
        if let Err(e) = raw.validate(file, ui) {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "contrib configs that do not load ({} of {} files):\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// The checker itself: it finds nested files, and a bad file fails it.
#[test]
fn the_contrib_check_finds_nested_files_and_catches_a_bad_key() {
    let tmp = tempfile::TempDir::new().unwrap();
    std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
    std::fs::write(tmp.path().join("a/b/deep.toml"), "").unwrap();
    std::fs::write(tmp.path().join("top.toml"), "").unwrap();
    std::fs::write(tmp.path().join("a/notes.md"), "").unwrap();
    let found = toml_files(tmp.path());
    assert_eq!(
        found,
        vec![
            tmp.path().join("a/b/deep.toml"),
            tmp.path().join("top.toml")
        ]
    );

    let ok = "[ldap]\nhosts = \"ldap.example.org\"\nbase_dn = \"dc=example,dc=org\"\n";
    assert!(parse_str(ok)
        .unwrap()
        .validate(Path::new("ok.toml"), UiSettings::default())
        .is_ok());
    assert!(parse_str(&format!("{ok}bindpw = \"x\"\n")).is_err());
    // A password file that is missing fails validation unless stood in for.
    let secret = tmp.path().join("pw");
    std::fs::write(&secret, "pw\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_file = format!(
        "{ok}bind_dn = \"cn=x\"\nbind_password_file = \"/nonexistent/mailcow-ldap-auth-pw\"\n"
    );
    assert!(parse_str(&with_file)
        .unwrap()
        .validate(Path::new("f.toml"), UiSettings::default())
        .is_err());
    let (stood_in, replaced) = with_stand_in_secrets(&with_file, &secret);
    assert_eq!(replaced, vec!["ldap.bind_password_file".to_owned()]);
    assert!(parse_str(&stood_in)
        .unwrap()
        .validate(Path::new("f.toml"), UiSettings::default())
        .is_ok());
    // Every secret-file key, in any section; others are left alone.
    let (_, replaced) = with_stand_in_secrets(
        "[ldap]\nbind_password_file = \"/nonexistent/a\"\nca_file = \"/nonexistent/ca\"\n\
         [database]\npassword_file = \"/nonexistent/b\"\n[serve]\nhttp_secret_file = \"/nonexistent/c\"\n\
         [[x]]\nsecret_file = \"/nonexistent/d\"\n",
        &secret,
    );
    assert_eq!(
        replaced,
        [
            "database.password_file",
            "ldap.bind_password_file",
            "serve.http_secret_file",
            "x.secret_file"
        ]
    );
    // A file that leaves hosts to mailcow's UI validates with the UI's stand-ins.
    let ui_only = "[database]\npassword = \"p\"\n[mailcow]\nsettings_from_database = true\n";
    let raw = parse_str(ui_only).unwrap();
    let ui = ui_for(&raw);
    assert!(raw.validate(Path::new("ui.toml"), ui).is_ok());
}
