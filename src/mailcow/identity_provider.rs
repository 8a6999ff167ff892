//! `identity_provider`: mailcow's UI settings (System > Configuration >
//! Identity Provider), and the configuration merged from them when
//! `settings_from_database` is on.

use super::{row, Store};
use crate::config::{
    self, Config, DatabaseConfig, HostList, RawLdap, RawMapping, RawSync, UiSettings,
};
use crate::outcome::Failure;
use serde_json::Value;
use std::time::Instant;

impl Store {
    /// Every row of `identity_provider`, as (key, value).
    pub fn identity_provider_rows(&mut self) -> Result<Vec<(String, String)>, Failure> {
        self.on_conn("reading identity_provider", |c| {
            row::all_text(
                c,
                "identity_provider",
                "SELECT `key`, `value` FROM identity_provider",
            )?
            .into_iter()
            .map(|mut r| {
                Ok((
                    r.next("key")?,
                    r.next::<Option<String>>("value")?.unwrap_or_default(),
                ))
            })
            .collect()
        })
    }
}

/// mailcow's UI settings (`identity_provider` rows) in this tool's terms.
/// Rows of other providers are ignored; so is everything when the provider
/// in use is not LDAP. Booleans are stored as "1" / "" (or "0").
pub fn ui_settings(rows: &[(String, String)]) -> Result<UiSettings, String> {
    let get = |k: &str| {
        rows.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut ui = UiSettings::default();
    if get("authsource").as_deref() != Some("ldap") {
        return Ok(ui);
    }
    let flag = |k: &str| get(k).map(|v| matches!(v.as_str(), "1" | "true" | "on" | "yes"));
    let text = |k: &str| get(k).filter(|v| !v.is_empty());
    let number = |k: &str| -> Result<Option<u64>, String> {
        match text(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("identity_provider row {k} = \"{v}\" is not a number")),
        }
    };
    ui.ldap = RawLdap {
        hosts: text("host").map(HostList::One),
        port: number("port")?
            .map(|p| {
                u16::try_from(p).map_err(|_| format!("identity_provider port {p} out of range"))
            })
            .transpose()?,
        use_ssl: flag("use_ssl"),
        use_tls: flag("use_tls"),
        ignore_ssl_errors: flag("ignore_ssl_error").or_else(|| flag("ignore_ssl_errors")),
        base_dn: text("basedn"),
        username_field: text("username_field"),
        filter: get("filter"),
        attribute_field: text("attribute_field"),
        bind_dn: text("binddn"),
        bind_password: text("bindpass").map(crate::secret::Secret::new),
        ..RawLdap::default()
    };
    let list = |k: &str| -> Result<Vec<String>, String> {
        let Some(v) = text(k) else {
            return Ok(Vec::new());
        };
        let parsed: Value = serde_json::from_str(&v)
            .map_err(|e| format!("identity_provider row {k} is not JSON: {e}"))?;
        let items: Vec<&Value> = match &parsed {
            Value::Array(a) => a.iter().collect(),
            // array_filter() in PHP can leave an object with numeric keys.
            Value::Object(o) => {
                let mut kv: Vec<(u64, &Value)> = o
                    .iter()
                    .map(|(k, v)| (k.parse().unwrap_or(u64::MAX), v))
                    .collect();
                kv.sort_by_key(|(k, _)| *k);
                kv.into_iter().map(|(_, v)| v).collect()
            }
            _ => return Err(format!("identity_provider row {k} is not a list")),
        };
        Ok(items
            .into_iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect())
    };
    let mappers = list("mappers")?;
    let templates = list("templates")?;
    if mappers.len() != templates.len() {
        return Err("identity_provider rows mappers and templates differ in length".into());
    }
    if !mappers.is_empty() {
        ui.mappings = Some(
            mappers
                .into_iter()
                .zip(templates)
                .map(|(attribute, template)| RawMapping {
                    attribute,
                    template,
                    action: None,
                })
                .collect(),
        );
    }
    ui.provisioning.default_template = text("default_template");
    // The UI's "Auto-create users on login": PHP's boolval() of the row, on
    // when there is none (identity_provider('get') in mailcow's
    // functions.inc.php). It stops creation at login only: mailcow's sync
    // (crons/ldap-sync.php) imports on `import_users` alone, and so does ours.
    ui.provisioning.login_provisioning = get("login_provisioning").map(|v| php_boolval(&v));
    ui.sync = RawSync {
        import_users: flag("import_users"),
        periodic_full_sync: flag("periodic_sync"),
        interval_minutes: number("sync_interval")?,
        ..RawSync::default()
    };
    Ok(ui)
}

/// PHP's `boolval()` of a string: false for "" and "0", true otherwise.
fn php_boolval(v: &str) -> bool {
    !matches!(v, "" | "0")
}

/// Load the configuration, merging mailcow's UI settings from the database
/// when `settings_from_database` is on. Returns the open store too, so a login
/// does not connect twice. Every problem is temporary (exit 111).
pub fn load_config(
    path: &std::path::Path,
    deadline: Instant,
) -> Result<(Config, Option<Store>), Failure> {
    let raw = config::load_raw(path).map_err(|e| Failure::Temporary(e.to_string()))?;
    if raw.database.is_some() {
        super::warm_up_handshake();
    }
    if !raw.settings_from_database() {
        let cfg = raw
            .validate(path, UiSettings::default())
            .map_err(|e| Failure::Temporary(e.to_string()))?;
        return Ok((cfg, None));
    }
    let db = config::validate_database(path, raw.database.clone().unwrap_or_default())
        .map_err(|e| Failure::Temporary(e.to_string()))?;
    let mut store = Store::connect(&db, deadline)?;
    let rows = store.identity_provider_rows()?;
    let ui = ui_settings(&rows)
        .map_err(|e| Failure::Temporary(format!("config from mailcow's database: {e}")))?;
    let cfg = raw.validate(path, ui).map_err(|e| {
        Failure::Temporary(format!(
            "{e} (settings_from_database: keys not in the file come from mailcow's UI)"
        ))
    })?;
    Ok((cfg, Some(store)))
}

/// What `serve` runs on: the configuration, the `identity_provider` rows it
/// was made from (with `settings_from_database`), and whether mailcow's UI has
/// the LDAP provider switched off.
pub struct ServeSettings {
    pub cfg: Config,
    pub rows: Option<Vec<(String, String)>>,
    /// `authsource` of mailcow's Identity Provider when it is not `ldap`
    /// (`""` when none is set): serve then answers "not ours" to every login.
    pub provider_off: Option<String>,
}

/// Like [`load_config`], for `serve`: with `settings_from_database`, mailcow's
/// UI may also have the LDAP provider switched off. The file must still be
/// valid then; its directory settings are not used, and where the file leaves
/// them out a placeholder no connection is ever made to stands in.
pub fn load_serve_config(
    path: &std::path::Path,
    deadline: Instant,
) -> Result<ServeSettings, Failure> {
    let raw = config::load_raw(path).map_err(|e| Failure::Temporary(e.to_string()))?;
    if !raw.settings_from_database() {
        let cfg = raw
            .validate(path, UiSettings::default())
            .map_err(|e| Failure::Temporary(e.to_string()))?;
        return Ok(ServeSettings {
            cfg,
            rows: None,
            provider_off: None,
        });
    }
    let db = config::validate_database(path, raw.database.clone().unwrap_or_default())
        .map_err(|e| Failure::Temporary(e.to_string()))?;
    let rows = read_identity_provider(&db, deadline)?;
    let source = identity_provider_source(&rows);
    let (ui, provider_off) = if source == "ldap" {
        let ui = ui_settings(&rows)
            .map_err(|e| Failure::Temporary(format!("config from mailcow's database: {e}")))?;
        (ui, None)
    } else {
        let mut ui = UiSettings::default();
        ui.ldap.hosts = Some(HostList::One(
            "identity-provider-is-not-ldap.invalid".into(),
        ));
        ui.ldap.base_dn = Some("dc=invalid".into());
        (ui, Some(source))
    };
    let cfg = raw.validate(path, ui).map_err(|e| {
        Failure::Temporary(format!(
            "{e} (settings_from_database: keys not in the file come from mailcow's UI)"
        ))
    })?;
    Ok(ServeSettings {
        cfg,
        rows: Some(rows),
        provider_off,
    })
}

/// mailcow's `identity_provider` rows, on a connection of their own.
pub fn read_identity_provider(
    db: &DatabaseConfig,
    deadline: Instant,
) -> Result<Vec<(String, String)>, Failure> {
    let mut store = Store::connect(db, deadline)?;
    let mut rows = store.identity_provider_rows()?;
    rows.sort();
    Ok(rows)
}

/// Whether mailcow's own LDAP sync runs: its `crons/ldap-sync.php`
/// (mailcow-dockerized, `data/conf/phpfpm/crons/ldap-sync.php`, started every
/// minute by ofelia in php-fpm) goes on exactly when `authsource` is `ldap` and
/// `intval(periodic_sync)` or `intval(import_users)` is 1.
pub fn mailcow_sync_on(rows: &[(String, String)]) -> bool {
    // PHP's intval(): the leading digits of the trimmed text, 0 without any.
    let intval = |k: &str| {
        rows.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| {
                let v = v.trim();
                let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().unwrap_or(0)
            })
            .unwrap_or(0)
    };
    identity_provider_source(rows) == "ldap"
        && (intval("periodic_sync") == 1 || intval("import_users") == 1)
}

/// The `authsource` row: which identity provider mailcow's UI has chosen.
pub fn identity_provider_source(rows: &[(String, String)]) -> String {
    rows.iter()
        .find(|(k, _)| k == "authsource")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn mailcow_sync_on_as_its_cron_decides() {
        let on = |v: &[(&str, &str)]| mailcow_sync_on(&rows(v));
        assert!(on(&[("authsource", "ldap"), ("import_users", "1")]));
        assert!(on(&[
            ("authsource", "ldap"),
            ("periodic_sync", "1"),
            ("import_users", "")
        ]));
        assert!(!on(&[
            ("authsource", "ldap"),
            ("periodic_sync", "0"),
            ("import_users", "")
        ]));
        assert!(!on(&[("authsource", "keycloak"), ("import_users", "1")]));
        assert!(!on(&[("import_users", "1")]), "no provider chosen");
        // intval("true") is 0 in PHP: mailcow's cron does not run on it.
        assert!(!on(&[("authsource", "ldap"), ("import_users", "true")]));
    }

    #[test]
    fn ui_rows_become_settings() {
        let ui = ui_settings(&rows(&[
            ("authsource", "ldap"),
            ("host", "a,b"),
            ("port", "389"),
            ("use_ssl", "1"),
            ("use_tls", ""),
            ("ignore_ssl_error", ""),
            ("basedn", "dc=x"),
            ("username_field", "mail"),
            ("filter", ""),
            ("attribute_field", "othermailbox"),
            ("binddn", "cn=r"),
            ("bindpass", "pw"),
            ("mappers", "[\"staff\",\"default\"]"),
            ("templates", "{\"0\":\"Staff\",\"2\":\"Default\"}"),
            ("default_template", ""),
            ("import_users", "1"),
            ("periodic_sync", "0"),
            ("sync_interval", "5"),
            ("access_token", ""),
        ]))
        .unwrap();
        assert!(matches!(ui.ldap.hosts, Some(HostList::One(ref h)) if h == "a,b"));
        assert_eq!(ui.ldap.use_ssl, Some(true));
        assert_eq!(ui.ldap.use_tls, Some(false));
        assert_eq!(ui.ldap.ignore_ssl_errors, Some(false));
        assert_eq!(
            ui.ldap.bind_password.as_ref().map(|p| p.expose()),
            Some("pw")
        );
        let m = ui.mappings.unwrap();
        assert_eq!(
            (m[1].attribute.as_str(), m[1].template.as_str()),
            ("default", "Default")
        );
        assert_eq!(ui.provisioning.default_template, None);
        assert_eq!(ui.provisioning.login_provisioning, None, "no row: on");
        let off = |v: &str| {
            ui_settings(&rows(&[("authsource", "ldap"), ("login_provisioning", v)]))
                .unwrap()
                .provisioning
                .login_provisioning
        };
        assert_eq!(off("0"), Some(false));
        assert_eq!(off(""), Some(false));
        assert_eq!(off("1"), Some(true));
        assert_eq!(ui.sync.import_users, Some(true));
        assert_eq!(ui.sync.periodic_full_sync, Some(false));
        assert_eq!(ui.sync.interval_minutes, Some(5));
    }

    #[test]
    fn other_providers_and_bad_rows() {
        let ui = ui_settings(&rows(&[("authsource", "keycloak"), ("host", "x")])).unwrap();
        assert!(ui.ldap.hosts.is_none());
        assert!(ui_settings(&rows(&[("authsource", "ldap"), ("port", "x")])).is_err());
        assert!(ui_settings(&rows(&[
            ("authsource", "ldap"),
            ("mappers", "[\"a\"]"),
            ("templates", "[]")
        ]))
        .is_err());
        assert!(ui_settings(&rows(&[("authsource", "ldap"), ("mappers", "nope")])).is_err());
    }
}
