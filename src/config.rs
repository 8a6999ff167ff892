//! Configuration: the TOML file as written (`Raw*`, every key optional, unknown
//! keys refused) and the validated [`Config`] the rest of the program uses.
//!
//! Nothing here opens a network connection: a bad file is reported before any
//! server is contacted, as one line naming the file and the key.

use crate::outcome::Reason;
use crate::secret::Secret;
use crate::trusted_file::{read_trusted, TrustError};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration is read from when neither `-c` nor the environment say otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mailcow-ldap-auth/config.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "MAILCOW_LDAP_AUTH_CONFIG";

/// A configuration problem, shown to the admin as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<PathBuf>,
    pub login_timeout_ms: Option<u64>,
    pub log_target: Option<String>,
    #[serde(default)]
    pub ldap: RawLdap,
    #[serde(default)]
    pub dovecot: RawDovecot,
    pub database: Option<RawDatabase>,
    pub attribute_mapping: Option<Vec<RawMapping>>,
    #[serde(default)]
    pub provisioning: RawProvisioning,
    #[serde(default)]
    pub mailcow: RawMailcow,
    #[serde(default)]
    pub sync: RawSync,
    #[serde(default)]
    pub serve: RawServe,
    #[serde(default)]
    pub messages: RawMessages,
}

/// `hosts` may be written as `"a, b"` or `["a", "b"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HostList {
    One(String),
    Many(Vec<String>),
}

/// `[ldap]`. Every key is optional so that settings read from mailcow's
/// `identity_provider` table can fill in what the file leaves out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLdap {
    pub hosts: Option<HostList>,
    pub port: Option<u16>,
    pub use_ssl: Option<bool>,
    pub use_tls: Option<bool>,
    pub ignore_ssl_errors: Option<bool>,
    pub ca_file: Option<String>,
    pub ca_only: Option<bool>,
    pub base_dn: Option<String>,
    pub username_field: Option<String>,
    pub filter: Option<String>,
    pub attribute_field: Option<String>,
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    pub bind_password_file: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub host_retry_seconds: Option<u64>,
}

impl RawLdap {
    /// Keys set here win; keys left out are taken from `other`.
    pub fn or(self, other: RawLdap) -> RawLdap {
        RawLdap {
            hosts: self.hosts.or(other.hosts),
            port: self.port.or(other.port),
            use_ssl: self.use_ssl.or(other.use_ssl),
            use_tls: self.use_tls.or(other.use_tls),
            ignore_ssl_errors: self.ignore_ssl_errors.or(other.ignore_ssl_errors),
            ca_file: self.ca_file.or(other.ca_file),
            ca_only: self.ca_only.or(other.ca_only),
            base_dn: self.base_dn.or(other.base_dn),
            username_field: self.username_field.or(other.username_field),
            filter: self.filter.or(other.filter),
            attribute_field: self.attribute_field.or(other.attribute_field),
            bind_dn: self.bind_dn.or(other.bind_dn),
            // A password file in this file overrides a password from the database too.
            bind_password: if self.bind_password_file.is_some() {
                self.bind_password
            } else {
                self.bind_password.or(other.bind_password)
            },
            bind_password_file: self.bind_password_file.or(other.bind_password_file),
            connect_timeout_ms: self.connect_timeout_ms.or(other.connect_timeout_ms),
            timeout_ms: self.timeout_ms.or(other.timeout_ms),
            host_retry_seconds: self.host_retry_seconds.or(other.host_retry_seconds),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDovecot {
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub home: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub host: Option<String>,
    pub socket: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<String>,
    pub tls: Option<bool>,
    pub ca_file: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    pub attribute: String,
    /// Exactly one of `template` and `action`.
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub action: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvisioning {
    pub login_provisioning: Option<bool>,
    pub default_template: Option<String>,
    pub mail_field: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMailcow {
    pub settings_from_database: Option<bool>,
    pub settings_refresh_seconds: Option<u64>,
    pub redis_url: Option<Secret>,
    /// `"full"` (mailcow's whole passdb) or `"ldap-only"`.
    pub passdb: Option<String>,
    /// SOGo's address on mailcow's network (`${IPV4_NETWORK}.248`).
    pub sogo_address: Option<String>,
    /// mailcow's SOGo single sign-on secret (`sogo-sso.pass`).
    pub sogo_sso_file: Option<PathBuf>,
    /// Attributes whose values become mailcow aliases of the mailbox.
    pub alias_attributes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub import_users: Option<bool>,
    pub periodic_full_sync: Option<bool>,
    pub interval_minutes: Option<u64>,
    pub page_size: Option<u32>,
    pub deactivate_missing: Option<bool>,
    pub missing_grace_hours: Option<u64>,
    pub max_deactivate_percent: Option<u32>,
    pub alongside_mailcow_sync: Option<bool>,
    pub import_requires_attribute: Option<bool>,
}

/// `[messages]`: what a user is told when the password was right but the
/// login is refused (keys: [`crate::outcome::Reason::key`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessages {
    pub password_expired: Option<String>,
    pub must_change_password: Option<String>,
    pub account_disabled: Option<String>,
    pub account_expired: Option<String>,
    pub logon_hours: Option<String>,
    pub workstation: Option<String>,
    pub login_disabled: Option<String>,
    pub service_not_allowed: Option<String>,
}

impl RawMessages {
    fn get(&self, r: Reason) -> Option<&String> {
        match r {
            Reason::PasswordExpired => self.password_expired.as_ref(),
            Reason::MustChangePassword => self.must_change_password.as_ref(),
            Reason::AccountDisabled => self.account_disabled.as_ref(),
            Reason::AccountExpired => self.account_expired.as_ref(),
            Reason::LogonHours => self.logon_hours.as_ref(),
            Reason::Workstation => self.workstation.as_ref(),
            Reason::LoginDisabled => self.login_disabled.as_ref(),
            Reason::ServiceNotAllowed => self.service_not_allowed.as_ref(),
        }
    }
}

/// Longest `[messages]` text, in bytes.
pub const MAX_MESSAGE_LEN: usize = 300;

/// The validated `[messages]`: a text for every [`Reason`]; an empty one
/// means the user is not told (the plain refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Messages {
    texts: Vec<(Reason, String)>,
}

impl Default for Messages {
    fn default() -> Messages {
        Messages {
            texts: Reason::ALL
                .iter()
                .map(|&r| (r, r.default_text().to_owned()))
                .collect(),
        }
    }
}

impl Messages {
    /// The text for `r` ("" when none is to be given).
    pub fn text(&self, r: Reason) -> &str {
        self.texts
            .iter()
            .find(|(k, _)| *k == r)
            .map_or("", |(_, t)| t.as_str())
    }

    fn from_raw(raw: &RawMessages) -> Result<Messages, String> {
        let mut m = Messages::default();
        for (r, text) in &mut m.texts {
            let Some(t) = raw.get(*r) else { continue };
            check_message(t).map_err(|why| format!("messages.{}: {why}", r.key()))?;
            *text = t.clone();
        }
        Ok(m)
    }
}

/// A text Dovecot hands to the client as it is (IMAP `NO [CONTACTADMIN]
/// text`, and the like in POP3 and ManageSieve): one line, no control
/// characters (Dovecot's passdb fields are TAB-separated, protocol lines
/// end at CR LF), not starting with `[` (IMAP would read it as a response
/// code), not too long.
fn check_message(t: &str) -> Result<(), String> {
    if let Some(c) = t.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains the control character U+{:04X} (no line breaks, tabs or other control characters)",
            u32::from(c)
        ));
    }
    if t.starts_with('[') {
        return Err("starts with '[' (an IMAP client would read it as a response code)".into());
    }
    if t.trim() != t {
        return Err("starts or ends with a space".into());
    }
    if t.len() > MAX_MESSAGE_LEN {
        return Err(format!("{} bytes long: at most {MAX_MESSAGE_LEN}", t.len()));
    }
    Ok(())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServe {
    pub http_listen: Option<String>,
    pub http_secret_file: Option<String>,
    pub saslauthd_socket: Option<String>,
    pub socket_mode: Option<String>,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    pub workers: Option<usize>,
    pub queue_timeout_ms: Option<u64>,
    pub ldap_connections: Option<usize>,
    pub ldap_bind_connections: Option<usize>,
    pub dn_cache_seconds: Option<u64>,
    pub db_connections: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub header_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_peer: Option<usize>,
    pub metrics_listen: Option<String>,
    pub allow_insecure_http: Option<bool>,
}

/// Settings that mailcow's UI keeps in the `identity_provider` table, in the
/// shape of this file's keys. Keys present in the file win over these.
#[derive(Debug, Clone, Default)]
pub struct UiSettings {
    pub ldap: RawLdap,
    pub mappings: Option<Vec<RawMapping>>,
    pub provisioning: RawProvisioning,
    pub sync: RawSync,
}

// ---------------------------------------------------------------------------
// The validated configuration.

/// How the connection to the directory is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Plain,
    Ldaps,
    StartTls,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Plain => "plain LDAP (no TLS)",
            TlsMode::Ldaps => "LDAPS (TLS from the first byte)",
            TlsMode::StartTls => "StartTLS",
        })
    }
}

/// One directory server, in the order the admin listed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host {
    pub name: String,
    pub port: u16,
}

impl Host {
    /// `name:port`, with IPv6 addresses in brackets.
    pub fn label(&self) -> String {
        if self.name.contains(':') {
            format!("[{}]:{}", self.name, self.port)
        } else {
            format!("{}:{}", self.name, self.port)
        }
    }

    pub fn url(&self, tls: TlsMode) -> String {
        let scheme = if tls == TlsMode::Ldaps {
            "ldaps"
        } else {
            "ldap"
        };
        format!("{scheme}://{}", self.label())
    }
}

/// The search filter, parsed once: either ANDed with `(username_field=login)`
/// or a whole filter with `%u`/`%s` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterTemplate {
    /// `(&<extra>(<field>=<login>))`, or `(<field>=<login>)` when there is no extra filter.
    And { extra: Option<String> },
    /// The admin's filter with every `%u` / `%s` replaced by the escaped login.
    Placeholder(String),
}

#[derive(Debug, Clone)]
pub struct LdapConfig {
    pub hosts: Vec<Host>,
    pub tls: TlsMode,
    pub ignore_ssl_errors: bool,
    /// CA bundles trusted in addition to the system roots: `ca_file`, then `LDAPTLS_CACERT`.
    pub ca_files: Vec<PathBuf>,
    /// Trust only `ca_files`, not the system roots (libldap's `TLS_CACERT` rule).
    pub ca_only: bool,
    pub base_dn: String,
    /// Lower-cased attribute name.
    pub username_field: String,
    pub filter: FilterTemplate,
    /// The admin's filter as written (for diagnostics and the sync search).
    pub filter_text: String,
    /// Lower-cased attribute name, if any.
    pub attribute_field: Option<String>,
    pub bind_dn: Option<String>,
    pub bind_password: Secret,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub host_retry: Duration,
}

#[derive(Debug, Clone)]
pub struct DovecotConfig {
    pub uid: String,
    pub gid: String,
    pub home: String,
}

#[derive(Debug, Clone)]
pub enum DbAddress {
    Tcp { host: String, port: u16 },
    Socket(PathBuf),
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub address: DbAddress,
    pub name: String,
    pub user: String,
    pub password: Secret,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// "Attribute Mapping": an attribute value selects a mailbox template, or
/// (`action`, beyond mailcow) retires the mailbox: `template` is then empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub attribute: String,
    pub template: String,
    pub action: Option<Retire>,
}

/// What a retiring `[[attribute_mapping]]` value does to an `ldap` mailbox:
/// the `active` value mailcow knows for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// `action = "disallow_login"`: mailcow's `active = 2` (mail still arrives).
    DisallowLogin,
    /// `action = "deactivate"`: `active = 0`.
    Deactivate,
}

impl Retire {
    pub const NAMES: &'static str = "\"disallow_login\" or \"deactivate\"";

    pub fn parse(s: &str) -> Option<Retire> {
        match s {
            "disallow_login" => Some(Retire::DisallowLogin),
            "deactivate" => Some(Retire::Deactivate),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Retire::DisallowLogin => "disallow_login",
            Retire::Deactivate => "deactivate",
        }
    }

    /// `mailbox.active` for it.
    pub fn active(self) -> i64 {
        match self {
            Retire::DisallowLogin => 2,
            Retire::Deactivate => 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProvisioningConfig {
    pub login_provisioning: bool,
    pub default_template: Option<String>,
    /// Lower-cased attribute holding the mailbox address; `None`: the username field.
    pub mail_field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub import_users: bool,
    pub periodic_full_sync: bool,
    pub interval: Duration,
    pub page_size: u32,
    pub deactivate_missing: bool,
    pub missing_grace: Duration,
    pub max_deactivate_percent: u32,
    /// Run even while mailcow's own LDAP sync is switched on in its UI.
    pub alongside_mailcow_sync: bool,
    /// Import only entries that have `attribute_field`, even with a
    /// `default_template` (mailcow's crons/ldap-sync.php rule).
    pub import_requires_attribute: bool,
}

/// `[serve]`: the long-running service.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub http_listen: Option<std::net::SocketAddr>,
    pub http_secret: Option<Secret>,
    pub saslauthd_socket: Option<PathBuf>,
    pub socket_mode: u32,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    pub workers: usize,
    pub queue_timeout: Duration,
    pub ldap_connections: usize,
    /// Warm connections kept for user binds only.
    pub ldap_bind_connections: usize,
    /// How long a login's DN (and the attributes read) is cached; zero: never.
    pub dn_cache: Duration,
    pub db_connections: usize,
    pub max_body_bytes: usize,
    /// A request head must arrive within this (also: idle keep-alive limit).
    pub header_timeout: Duration,
    /// A whole request (head and body) must arrive within this.
    pub request_timeout: Duration,
    /// Connections open at once on each listener.
    pub max_connections: usize,
    /// HTTP connections open at once from one client address.
    pub max_connections_per_peer: usize,
    /// Where `GET /metrics` answers; `None`: no metrics listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// syslog when `/dev/log` answers, else stderr.
    Auto,
    Syslog,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub login_timeout: Duration,
    pub log_target: LogTarget,
    pub ldap: LdapConfig,
    pub dovecot: DovecotConfig,
    pub database: Option<DatabaseConfig>,
    pub mappings: Vec<Mapping>,
    pub provisioning: ProvisioningConfig,
    pub settings_from_database: bool,
    /// serve: how often mailcow's `identity_provider` rows are read again (with
    /// `settings_from_database`); `None`: only at start and on SIGHUP.
    pub settings_refresh: Option<Duration>,
    pub redis_url: Option<Secret>,
    /// `[mailcow] passdb = "full"`: app passwords, the mailbox's state and
    /// mailcow-SQL passwords are checked before any LDAP bind (needs
    /// `[database]`; its default then). `false`: `"ldap-only"`.
    pub full_passdb: bool,
    /// `[mailcow] sogo_address`: logins from this address are SOGo's (its
    /// single sign-on, as mailcow's `mailcowauth.php` tells them apart).
    pub sogo_address: Option<IpAddr>,
    /// `[mailcow] sogo_sso_file`: SOGo's single sign-on secret, read at each
    /// login from `sogo_address` (mailcow writes a new one at every start of
    /// its Dovecot container). `None`: serve hands SOGo's logins on.
    pub sogo_sso_file: Option<PathBuf>,
    /// `[mailcow] alias_attributes`: attributes (lower-cased) whose values
    /// become aliases of the mailbox (`provision::directory_aliases`).
    pub alias_attributes: Vec<String>,
    /// `[messages]`: the texts of refusals the user is told.
    pub messages: Messages,
    pub sync: SyncConfig,
    pub serve: ServeConfig,
}

// ---------------------------------------------------------------------------
// Loading.

/// The file to read: `-c`, else `$MAILCOW_LDAP_AUTH_CONFIG`, else the default path.
pub fn resolve_path(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Read and parse the file, without merging settings from the database.
///
/// The file is opened once and checked on the open descriptor
/// ([`crate::trusted_file`]): a regular file owned by root or by us,
/// writable by nobody else, and not readable by others when it holds a
/// password. The password question needs the parsed text, so the mode is
/// judged after parsing, on the same descriptor's metadata.
pub fn load_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let err = |message: String| ConfigError {
        file: path.to_owned(),
        message,
    };
    let file = read_trusted(path, false).map_err(|e| err(config_file_message(path, e)))?;
    let raw = parse_str(&file.text).map_err(err)?;
    if raw.holds_password() {
        file.require_private().map_err(|e| err(e.to_string()))?;
    }
    Ok(raw)
}

fn config_file_message(path: &Path, e: TrustError) -> String {
    match e {
        TrustError::NotFound => {
            "not found (give another with -c FILE or MAILCOW_LDAP_AUTH_CONFIG)".to_owned()
        }
        TrustError::PermissionDenied { uid } => format!(
            "cannot be read by uid {uid} (Dovecot runs the helper as its internal user: \
             chgrp dovecot {} && chmod 640 {})",
            path.display(),
            path.display()
        ),
        other => other.to_string(),
    }
}

/// Load and validate in one step (no database settings).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_raw(path)?.validate(path, UiSettings::default())
}

/// Parse TOML text into the raw form; the error is one line with the line number.
pub fn parse_str(text: &str) -> Result<RawConfig, String> {
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().replace('\n', " ");
        match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        }
    })
}

/// First line of a secret file, checked like the config file itself.
fn read_secret_file(config: &Path, key: &str, file: &str) -> Result<Secret, ConfigError> {
    let err = |message: String| ConfigError {
        file: config.to_owned(),
        message,
    };
    let secret =
        read_trusted(Path::new(file), true).map_err(|e| err(format!("{key} = \"{file}\" {e}")))?;
    let first = secret
        .text
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r');
    if first.is_empty() {
        return Err(err(format!("{key} = \"{file}\" is empty")));
    }
    Ok(Secret::new(first.to_owned()))
}

impl RawConfig {
    /// Whether the file itself holds a password (as opposed to naming a file with one).
    pub fn holds_password(&self) -> bool {
        let set = |v: &Option<Secret>| v.as_ref().is_some_and(|s| !s.is_empty());
        set(&self.ldap.bind_password)
            || self.database.as_ref().is_some_and(|d| set(&d.password))
            || self
                .mailcow
                .redis_url
                .as_ref()
                .is_some_and(|u| u.expose().contains('@'))
    }

    pub fn settings_from_database(&self) -> bool {
        self.mailcow.settings_from_database.unwrap_or(false)
    }

    /// Validate, taking keys the file leaves out from `ui` (mailcow's own settings).
    pub fn validate(self, path: &Path, ui: UiSettings) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.to_owned(),
            message,
        };
        let from_db = self.settings_from_database();
        let ldap = validate_ldap(path, self.ldap.or(ui.ldap))?;

        let dovecot = DovecotConfig {
            uid: non_empty_or(self.dovecot.uid, "vmail"),
            gid: non_empty_or(self.dovecot.gid, "vmail"),
            home: non_empty_or(self.dovecot.home, "/var/vmail/%d/%n"),
        };
        if dovecot.uid.chars().any(char::is_whitespace)
            || dovecot.gid.chars().any(char::is_whitespace)
        {
            return Err(err(
                "dovecot.uid and dovecot.gid must not contain spaces".into()
            ));
        }
        if dovecot.home.chars().any(|c| c.is_control() || c == '\t') {
            return Err(err(
                "dovecot.home must not contain control characters".into()
            ));
        }

        let database = match self.database {
            None => None,
            Some(d) => Some(validate_database(path, d)?),
        };
        if from_db && database.is_none() {
            return Err(err(
                "mailcow.settings_from_database = true needs a [database] section".into(),
            ));
        }

        let full_passdb =
            match self.mailcow.passdb.as_deref() {
                None => database.is_some(),
                Some("full") if database.is_none() => return Err(err(
                    "mailcow.passdb = \"full\" needs a [database] section (or set \"ldap-only\")"
                        .into(),
                )),
                Some("full") => true,
                Some("ldap-only") => false,
                Some(other) => {
                    return Err(err(format!(
                        "mailcow.passdb = \"{other}\": must be \"full\" or \"ldap-only\""
                    )))
                }
            };

        let messages = Messages::from_raw(&self.messages).map_err(err)?;

        let mut alias_attributes = Vec::new();
        for a in self.mailcow.alias_attributes.clone().unwrap_or_default() {
            match attr_name(path, "mailcow.alias_attributes", Some(a))? {
                Some(a) if !alias_attributes.contains(&a) => alias_attributes.push(a),
                Some(_) => {}
                None => {
                    return Err(err(
                        "mailcow.alias_attributes: an empty attribute name".into()
                    ))
                }
            }
        }
        let sogo_address = match self.mailcow.sogo_address.as_deref() {
            None | Some("") => None,
            Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
                err(format!(
                    "mailcow.sogo_address = \"{a}\": not an IP address (mailcow's SOGo: IPV4_NETWORK of mailcow.conf, then .248)"
                ))
            })?),
        };

        let sogo_sso_file = match &self.mailcow.sogo_sso_file {
            None => None,
            Some(p) if p.as_os_str().is_empty() => None,
            Some(_) if sogo_address.is_none() => {
                return Err(err(
                    "mailcow.sogo_sso_file needs mailcow.sogo_address (the logins it is for come from SOGo's address)"
                        .into(),
                ))
            }
            Some(_) if database.is_none() => {
                return Err(err(
                    "mailcow.sogo_sso_file needs a [database] section (a single sign-on logs in a mailcow mailbox)"
                        .into(),
                ))
            }
            Some(p) => Some(p.clone()),
        };

        let mut mappings: Vec<Mapping> = Vec::new();
        let raw_mappings = self.attribute_mapping.or(ui.mappings).unwrap_or_default();
        for (i, m) in raw_mappings.into_iter().enumerate() {
            let n = i + 1;
            if m.attribute.is_empty() {
                return Err(err(format!(
                    "attribute_mapping #{n}: attribute must be set"
                )));
            }
            let action = match (m.template.is_empty(), m.action.as_deref()) {
                (false, None) => None,
                (true, None) => {
                    return Err(err(format!(
                        "attribute_mapping #{n}: set template (or action = {})",
                        Retire::NAMES
                    )))
                }
                (false, Some(_)) => {
                    return Err(err(format!(
                        "attribute_mapping #{n}: set either template or action, not both"
                    )))
                }
                (true, Some(a)) => Some(Retire::parse(a).ok_or_else(|| {
                    err(format!(
                        "attribute_mapping #{n}: action \"{a}\" is unknown; allowed: {}",
                        Retire::NAMES
                    ))
                })?),
            };
            mappings.push(Mapping {
                attribute: m.attribute,
                template: m.template,
                action,
            });
        }

        let prov = RawProvisioning {
            login_provisioning: self
                .provisioning
                .login_provisioning
                .or(ui.provisioning.login_provisioning),
            default_template: self
                .provisioning
                .default_template
                .or(ui.provisioning.default_template),
            mail_field: self.provisioning.mail_field.or(ui.provisioning.mail_field),
        };
        let provisioning = ProvisioningConfig {
            login_provisioning: prov.login_provisioning.unwrap_or(true),
            default_template: prov.default_template.filter(|s| !s.trim().is_empty()),
            mail_field: attr_name(path, "provisioning.mail_field", prov.mail_field)?,
        };

        let s = self.sync;
        let u = ui.sync;
        let interval = s.interval_minutes.or(u.interval_minutes).unwrap_or(15);
        if interval < 1 {
            return Err(err("sync.interval_minutes must be at least 1".into()));
        }
        let page_size = s.page_size.or(u.page_size).unwrap_or(500);
        if !(1..=100_000).contains(&page_size) {
            return Err(err("sync.page_size must be between 1 and 100000".into()));
        }
        let max_pct = s
            .max_deactivate_percent
            .or(u.max_deactivate_percent)
            .unwrap_or(10);
        if max_pct > 100 {
            return Err(err(
                "sync.max_deactivate_percent must be between 0 and 100".into()
            ));
        }
        let sync = SyncConfig {
            import_users: s.import_users.or(u.import_users).unwrap_or(false),
            periodic_full_sync: s
                .periodic_full_sync
                .or(u.periodic_full_sync)
                .unwrap_or(false),
            interval: Duration::from_secs(interval * 60),
            page_size,
            deactivate_missing: s
                .deactivate_missing
                .or(u.deactivate_missing)
                .unwrap_or(false),
            missing_grace: Duration::from_secs(
                s.missing_grace_hours
                    .or(u.missing_grace_hours)
                    .unwrap_or(24)
                    * 3600,
            ),
            max_deactivate_percent: max_pct,
            // The file's key only: mailcow's UI has no such switch.
            alongside_mailcow_sync: s.alongside_mailcow_sync.unwrap_or(false),
            import_requires_attribute: s.import_requires_attribute.unwrap_or(false),
        };

        let log_target = match self.log_target.as_deref().unwrap_or("auto") {
            "auto" => LogTarget::Auto,
            "syslog" => LogTarget::Syslog,
            "stderr" => LogTarget::Stderr,
            other => {
                return Err(err(format!(
                    "log_target = \"{other}\": use \"auto\", \"syslog\" or \"stderr\""
                )))
            }
        };
        let login_timeout = self.login_timeout_ms.unwrap_or(10_000);
        if !(100..=600_000).contains(&login_timeout) {
            return Err(err("login_timeout_ms must be between 100 and 600000".into()));
        }

        let serve = validate_serve(path, self.serve)?;

        Ok(Config {
            path: path.to_owned(),
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/run/mailcow-ldap-auth")),
            login_timeout: Duration::from_millis(login_timeout),
            log_target,
            ldap,
            dovecot,
            database,
            mappings,
            provisioning,
            settings_from_database: from_db,
            settings_refresh: match self.mailcow.settings_refresh_seconds.unwrap_or(10) {
                0 => None,
                n if n > 86_400 => {
                    return Err(err(format!(
                        "mailcow.settings_refresh_seconds = {n}: at most 86400 (0: only at start and on SIGHUP)"
                    )))
                }
                n => Some(Duration::from_secs(n)),
            },
            redis_url: self.mailcow.redis_url.filter(|s| !s.is_empty()),
            full_passdb,
            sogo_address,
            sogo_sso_file,
            alias_attributes,
            messages,
            sync,
            serve,
        })
    }
}

fn validate_serve(path: &Path, r: RawServe) -> Result<ServeConfig, ConfigError> {
    let err = |message: String| ConfigError {
        file: path.to_owned(),
        message,
    };
    let http_listen = match r.http_listen.filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(a) => Some(a.trim().parse::<std::net::SocketAddr>().map_err(|_| {
            err(format!(
                "serve.http_listen = \"{a}\": expected IP:PORT, e.g. \"127.0.0.1:9083\""
            ))
        })?),
    };
    let http_secret = match r.http_secret_file.filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(f) => Some(read_secret_file(path, "serve.http_secret_file", &f)?),
    };
    let mode_text = r.socket_mode.unwrap_or_else(|| "0660".to_owned());
    let socket_mode = u32::from_str_radix(mode_text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            err(format!(
                "serve.socket_mode = \"{mode_text}\": expected an octal mode like \"0660\""
            ))
        })?;
    let workers = r.workers.unwrap_or(16);
    if !(1..=1024).contains(&workers) {
        return Err(err("serve.workers must be between 1 and 1024".into()));
    }
    let ldap_connections = r.ldap_connections.unwrap_or(8);
    let db_connections = r.db_connections.unwrap_or(4);
    if ldap_connections > 256 || !(1..=256).contains(&db_connections) {
        return Err(err(
            "serve.ldap_connections must be at most 256 and serve.db_connections between 1 and 256"
                .into(),
        ));
    }
    let ldap_bind_connections = r.ldap_bind_connections.unwrap_or(8);
    if ldap_bind_connections > 256 {
        return Err(err("serve.ldap_bind_connections must be at most 256".into()));
    }
    let dn_cache_seconds = r.dn_cache_seconds.unwrap_or(0);
    if dn_cache_seconds > 86_400 {
        return Err(err(
            "serve.dn_cache_seconds must be between 0 (no cache) and 86400".into(),
        ));
    }
    let max_body_bytes = r.max_body_bytes.unwrap_or(8192);
    if !(256..=1_048_576).contains(&max_body_bytes) {
        return Err(err(
            "serve.max_body_bytes must be between 256 and 1048576".into()
        ));
    }
    let queue = r.queue_timeout_ms.unwrap_or(2000);
    if !(1..=600_000).contains(&queue) {
        return Err(err(
            "serve.queue_timeout_ms must be between 1 and 600000".into()
        ));
    }
    let header_ms = r.header_timeout_ms.unwrap_or(5000);
    let request_ms = r.request_timeout_ms.unwrap_or(10_000);
    if !(100..=600_000).contains(&header_ms) || !(header_ms..=600_000).contains(&request_ms) {
        return Err(err(
            "serve.header_timeout_ms must be between 100 and 600000, and serve.request_timeout_ms between it and 600000".into(),
        ));
    }
    let max_connections = r.max_connections.unwrap_or(4096);
    let max_connections_per_peer = r.max_connections_per_peer.unwrap_or(256);
    if !(1..=1_000_000).contains(&max_connections)
        || !(1..=max_connections).contains(&max_connections_per_peer)
    {
        return Err(err(
            "serve.max_connections must be between 1 and 1000000, and serve.max_connections_per_peer between 1 and it".into(),
        ));
    }
    let metrics_listen = match r.metrics_listen.filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(a) => Some(a.trim().parse::<std::net::SocketAddr>().map_err(|_| {
            err(format!(
                "serve.metrics_listen = \"{a}\": expected IP:PORT, e.g. \"127.0.0.1:9084\""
            ))
        })?),
    };
    let allow_insecure_http = r.allow_insecure_http.unwrap_or(false);
    if let Some(a) = http_listen {
        if !a.ip().is_loopback() && http_secret.is_none() && !allow_insecure_http {
            return Err(err(format!(
                "serve.http_listen = \"{a}\" is reachable from other hosts but serve.http_secret_file is not set: \
                 set one (and the same in the Lua script's secret_file), listen on 127.0.0.1, \
                 or set serve.allow_insecure_http = true"
            )));
        }
    }
    Ok(ServeConfig {
        header_timeout: Duration::from_millis(header_ms),
        request_timeout: Duration::from_millis(request_ms),
        max_connections,
        max_connections_per_peer,
        metrics_listen,
        allow_insecure_http,
        http_listen,
        http_secret,
        saslauthd_socket: r
            .saslauthd_socket
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from),
        socket_mode,
        socket_owner: r.socket_owner.filter(|s| !s.is_empty()),
        socket_group: r.socket_group.filter(|s| !s.is_empty()),
        workers,
        queue_timeout: Duration::from_millis(queue),
        ldap_connections,
        ldap_bind_connections,
        dn_cache: Duration::from_secs(dn_cache_seconds),
        db_connections,
        max_body_bytes,
    })
}

fn non_empty_or(v: Option<String>, default: &str) -> String {
    v.filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// An attribute name: letters, digits and '-' (or an OID), lower-cased; empty means unset.
fn attr_name(path: &Path, key: &str, v: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(v) = v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let ok_descr = v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let ok_oid = v.chars().all(|c| c.is_ascii_digit() || c == '.') && !v.starts_with('.');
    if !(ok_descr || ok_oid) {
        return Err(ConfigError {
            file: path.to_owned(),
            message: format!("{key} = \"{v}\" is not an LDAP attribute name"),
        });
    }
    Ok(Some(v.to_ascii_lowercase()))
}

/// Split the `hosts` value into entries, each possibly with its own port.
pub fn parse_hosts(list: &HostList, default_port: u16) -> Result<Vec<Host>, String> {
    let entries: Vec<String> = match list {
        HostList::One(s) => s.split(',').map(|e| e.trim().to_owned()).collect(),
        HostList::Many(v) => v.iter().map(|e| e.trim().to_owned()).collect(),
    };
    let mut hosts = Vec::new();
    for e in entries.into_iter().filter(|e| !e.is_empty()) {
        if e.contains("://") {
            return Err(format!(
                "hosts entry \"{e}\": give a host name (optionally with :port), not a URL; \
                 use use_ssl = true for LDAPS or use_tls = true for StartTLS"
            ));
        }
        if e.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
            return Err(format!("hosts entry \"{e}\" is not a host name"));
        }
        let (name, port) = if let Some(rest) = e.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("hosts entry \"{e}\": missing ']'"))?;
            let port = match after {
                "" => default_port,
                p => parse_port(
                    &e,
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("hosts entry \"{e}\": expected :port after ']'"))?,
                )?,
            };
            (addr.to_owned(), port)
        } else if e.matches(':').count() > 1 {
            // A bare IPv6 address, without a port.
            (e.clone(), default_port)
        } else if let Some((h, p)) = e.split_once(':') {
            (h.to_owned(), parse_port(&e, p)?)
        } else {
            (e.clone(), default_port)
        };
        if name.is_empty() {
            return Err(format!("hosts entry \"{e}\" has no host name"));
        }
        hosts.push(Host { name, port });
    }
    if hosts.is_empty() {
        return Err("ldap.hosts is empty: name at least one directory server".into());
    }
    Ok(hosts)
}

fn parse_port(entry: &str, p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "hosts entry \"{entry}\": \"{p}\" is not a port number"
        )),
    }
}

/// Parse the admin's filter once. Returns the template and the text as written.
pub fn parse_filter(filter: &str) -> Result<FilterTemplate, String> {
    let f = filter.trim();
    if f.is_empty() {
        return Ok(FilterTemplate::And { extra: None });
    }
    let wrapped = if f.starts_with('(') {
        f.to_owned()
    } else {
        format!("({f})")
    };
    // Check the syntax with a harmless value in place of the login.
    let probe = wrapped.replace("%u", "x").replace("%s", "x");
    if ldap3::parse_filter(&probe).is_err() {
        return Err(format!(
            "ldap.filter \"{filter}\" is not a valid LDAP filter (RFC 4515)"
        ));
    }
    if wrapped.contains("%u") || wrapped.contains("%s") {
        Ok(FilterTemplate::Placeholder(wrapped))
    } else {
        Ok(FilterTemplate::And {
            extra: Some(wrapped),
        })
    }
}

fn validate_ldap(path: &Path, r: RawLdap) -> Result<LdapConfig, ConfigError> {
    let err = |message: String| ConfigError {
        file: path.to_owned(),
        message,
    };
    let use_ssl = r.use_ssl.unwrap_or(false);
    let use_tls = r.use_tls.unwrap_or(false);
    let mut port = r.port.unwrap_or(389);
    if port == 0 {
        return Err(err("ldap.port must be between 1 and 65535".into()));
    }
    if use_ssl && use_tls {
        return Err(err(
            "ldap.use_ssl and ldap.use_tls are both true: choose LDAPS (use_ssl) or StartTLS (use_tls)".into(),
        ));
    }
    if use_ssl && port == 389 {
        port = 636;
    }
    if use_tls && port == 636 {
        return Err(err(
            "ldap.use_tls (StartTLS) with port 636: SSL ports cannot be used with StartTLS; \
             use port 389, or use_ssl = true for LDAPS"
                .into(),
        ));
    }
    let tls = match (use_ssl, use_tls) {
        (true, _) => TlsMode::Ldaps,
        (false, true) => TlsMode::StartTls,
        (false, false) => TlsMode::Plain,
    };
    let hosts = match &r.hosts {
        None => {
            return Err(err(
                "ldap.hosts is missing: name at least one directory server".into(),
            ))
        }
        Some(h) => parse_hosts(h, port).map_err(err)?,
    };
    if tls == TlsMode::StartTls {
        if let Some(h) = hosts.iter().find(|h| h.port == 636) {
            return Err(err(format!(
                "ldap.hosts entry {}: SSL ports cannot be used with StartTLS (use_tls)",
                h.label()
            )));
        }
    }
    let base_dn = r.base_dn.map(|s| s.trim().to_owned()).unwrap_or_default();
    if base_dn.is_empty() {
        return Err(err(
            "ldap.base_dn is missing: the DN under which users are searched".into(),
        ));
    }
    let username_field = attr_name(path, "ldap.username_field", r.username_field)?
        .unwrap_or_else(|| "mail".to_owned());
    let filter_text = r.filter.unwrap_or_default().trim().to_owned();
    let filter = parse_filter(&filter_text).map_err(err)?;
    let attribute_field = attr_name(path, "ldap.attribute_field", r.attribute_field)?;
    let bind_dn = r
        .bind_dn
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let bind_password = match (
        r.bind_password.filter(|s| !s.is_empty()),
        r.bind_password_file.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(err(
                "ldap.bind_password and ldap.bind_password_file are both set: keep one".into(),
            ))
        }
        (Some(p), None) => p,
        (None, Some(f)) => read_secret_file(path, "ldap.bind_password_file", &f)?,
        (None, None) => Secret::default(),
    };
    if bind_dn.is_some() && bind_password.is_empty() {
        return Err(err(
            "ldap.bind_dn is set but no bind_password or bind_password_file: \
             an empty password would make an unauthenticated bind"
                .into(),
        ));
    }
    let mut ca_files = Vec::new();
    if let Some(ca) = r.ca_file.filter(|s| !s.trim().is_empty()) {
        ca_files.push(PathBuf::from(ca.trim()));
    }
    if let Some(env) = std::env::var_os("LDAPTLS_CACERT").filter(|v| !v.is_empty()) {
        ca_files.push(PathBuf::from(env));
    }
    let ca_only = r.ca_only.unwrap_or(false);
    if ca_only && ca_files.is_empty() {
        return Err(err(
            "ldap.ca_only = true needs ldap.ca_file: the CA bundle that is then the only one trusted"
                .into(),
        ));
    }
    let ms = |v: Option<u64>, d: u64, key: &str| -> Result<Duration, ConfigError> {
        let v = v.unwrap_or(d);
        if !(1..=600_000).contains(&v) {
            return Err(err(format!("ldap.{key} must be between 1 and 600000")));
        }
        Ok(Duration::from_millis(v))
    };
    Ok(LdapConfig {
        hosts,
        tls,
        ignore_ssl_errors: r.ignore_ssl_errors.unwrap_or(false),
        ca_files,
        ca_only,
        base_dn,
        username_field,
        filter,
        filter_text,
        attribute_field,
        bind_dn,
        bind_password,
        connect_timeout: ms(r.connect_timeout_ms, 2000, "connect_timeout_ms")?,
        timeout: ms(r.timeout_ms, 5000, "timeout_ms")?,
        host_retry: Duration::from_secs(r.host_retry_seconds.unwrap_or(30)),
    })
}

pub fn validate_database(path: &Path, d: RawDatabase) -> Result<DatabaseConfig, ConfigError> {
    let err = |message: String| ConfigError {
        file: path.to_owned(),
        message,
    };
    let socket = d.socket.filter(|s| !s.trim().is_empty());
    let host = d.host.filter(|s| !s.trim().is_empty());
    let tls = d.tls.unwrap_or(false);
    let address = match (socket, host) {
        (Some(_), Some(_)) => {
            return Err(err(
                "database.host and database.socket are both set: keep one".into(),
            ))
        }
        (Some(s), None) => {
            if tls {
                return Err(err(
                    "database.tls = true needs a TCP connection (database.host), not a socket"
                        .into(),
                ));
            }
            DbAddress::Socket(PathBuf::from(s))
        }
        (None, h) => DbAddress::Tcp {
            host: h.unwrap_or_else(|| "127.0.0.1".to_owned()),
            port: d.port.unwrap_or(3306),
        },
    };
    let password = match (
        d.password.filter(|s| !s.is_empty()),
        d.password_file.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(err(
                "database.password and database.password_file are both set: keep one".into(),
            ))
        }
        (Some(p), None) => p,
        (None, Some(f)) => read_secret_file(path, "database.password_file", &f)?,
        (None, None) => Secret::default(),
    };
    let ms = |v: Option<u64>, dflt: u64, key: &str| -> Result<Duration, ConfigError> {
        let v = v.unwrap_or(dflt);
        if !(1..=600_000).contains(&v) {
            return Err(err(format!("database.{key} must be between 1 and 600000")));
        }
        Ok(Duration::from_millis(v))
    };
    Ok(DatabaseConfig {
        address,
        name: non_empty_or(d.name, "mailcow"),
        user: non_empty_or(d.user, "mailcow"),
        password,
        tls,
        ca_file: d
            .ca_file
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from),
        connect_timeout: ms(d.connect_timeout_ms, 2000, "connect_timeout_ms")?,
        timeout: ms(d.timeout_ms, 5000, "timeout_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<Config, String> {
        parse_str(text).and_then(|r| {
            r.validate(Path::new("t.toml"), UiSettings::default())
                .map_err(|e| e.message)
        })
    }

    const MIN: &str = "[ldap]\nhosts = \"ldap.example.org\"\nbase_dn = \"dc=example,dc=org\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = validate(MIN).unwrap();
        assert_eq!(
            c.ldap.hosts,
            vec![Host {
                name: "ldap.example.org".into(),
                port: 389
            }]
        );
        assert_eq!(c.ldap.tls, TlsMode::Plain);
        assert_eq!(c.ldap.username_field, "mail");
        assert_eq!(c.ldap.connect_timeout, Duration::from_millis(2000));
        assert_eq!(c.ldap.timeout, Duration::from_millis(5000));
        assert_eq!(c.ldap.host_retry, Duration::from_secs(30));
        assert_eq!(c.dovecot.home, "/var/vmail/%d/%n");
        assert_eq!(c.state_dir, PathBuf::from("/run/mailcow-ldap-auth"));
        assert_eq!(c.login_timeout, Duration::from_secs(10));
        assert!(c.database.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = validate("[ldap]\nhosts = \"a\"\nbase_dn = \"x\"\nbindpw = \"x\"\n").unwrap_err();
        assert!(e.contains("bindpw"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let e = validate("[ldapp]\n").unwrap_err();
        assert!(e.contains("ldapp"), "{e}");
    }

    #[test]
    fn hosts_as_string_or_array_with_ports_and_ipv6() {
        let h = parse_hosts(
            &HostList::One("a, b:1389 ,[::1]:636, [fe80::1], ::2".into()),
            389,
        )
        .unwrap();
        assert_eq!(
            h,
            vec![
                Host {
                    name: "a".into(),
                    port: 389
                },
                Host {
                    name: "b".into(),
                    port: 1389
                },
                Host {
                    name: "::1".into(),
                    port: 636
                },
                Host {
                    name: "fe80::1".into(),
                    port: 389
                },
                Host {
                    name: "::2".into(),
                    port: 389
                },
            ]
        );
        assert_eq!(h[2].label(), "[::1]:636");
        let h = parse_hosts(&HostList::Many(vec!["x".into(), "y:10".into()]), 636).unwrap();
        assert_eq!(h[0].port, 636);
        assert_eq!(h[1].port, 10);
        assert!(parse_hosts(&HostList::One("ldaps://x".into()), 389)
            .unwrap_err()
            .contains("use_ssl"));
        assert!(parse_hosts(&HostList::One("x:0".into()), 389).is_err());
        assert!(parse_hosts(&HostList::One("x:abc".into()), 389).is_err());
        assert!(parse_hosts(&HostList::One(" , ".into()), 389).is_err());
        assert!(parse_hosts(&HostList::One("[::1".into()), 389).is_err());
    }

    #[test]
    fn a_mapping_has_a_template_or_an_action() {
        let check = |body: &str| {
            let text = format!(
                "[ldap]\nhosts = \"h\"\nbase_dn = \"dc=x\"\n\n[[attribute_mapping]]\nattribute = \"left\"\n{body}"
            );
            parse_str(&text)
                .unwrap()
                .validate(Path::new("t.toml"), UiSettings::default())
                .map(|c| c.mappings[0].action)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            check("action = \"disallow_login\""),
            Ok(Some(Retire::DisallowLogin))
        );
        assert_eq!(
            check("action = \"deactivate\""),
            Ok(Some(Retire::Deactivate))
        );
        assert_eq!(check("template = \"T\""), Ok(None));
        let e = check("action = \"delete\"").unwrap_err();
        assert!(
            e.contains(
                "action \"delete\" is unknown; allowed: \"disallow_login\" or \"deactivate\""
            ),
            "{e}"
        );
        let e = check("template = \"T\"\naction = \"deactivate\"").unwrap_err();
        assert!(e.contains("either template or action, not both"), "{e}");
        let e = check("").unwrap_err();
        assert!(e.contains("attribute_mapping #1: set template"), "{e}");
    }

    #[test]
    fn ssl_and_tls_port_rules() {
        let c = validate(&format!("{MIN}use_ssl = true\n")).unwrap();
        assert_eq!(c.ldap.tls, TlsMode::Ldaps);
        assert_eq!(c.ldap.hosts[0].port, 636);
        let c = validate(&format!("{MIN}use_ssl = true\nport = 1636\n")).unwrap();
        assert_eq!(c.ldap.hosts[0].port, 1636);
        let e = validate(&format!("{MIN}use_ssl = true\nuse_tls = true\n")).unwrap_err();
        assert!(e.contains("choose"), "{e}");
        let e = validate(&format!("{MIN}use_tls = true\nport = 636\n")).unwrap_err();
        assert!(e.contains("SSL ports cannot be used"), "{e}");
        let c = validate(&format!("{MIN}use_tls = true\n")).unwrap();
        assert_eq!(c.ldap.tls, TlsMode::StartTls);
    }

    #[test]
    fn filter_forms() {
        assert_eq!(
            parse_filter("").unwrap(),
            FilterTemplate::And { extra: None }
        );
        assert_eq!(
            parse_filter("objectClass=person").unwrap(),
            FilterTemplate::And {
                extra: Some("(objectClass=person)".into())
            }
        );
        assert_eq!(
            parse_filter("(|(uid=%u)(mail=%s))").unwrap(),
            FilterTemplate::Placeholder("(|(uid=%u)(mail=%s))".into())
        );
        assert!(parse_filter("(&(a=b)").is_err());
        assert!(parse_filter("((").is_err());
    }

    #[test]
    fn attribute_names_are_lowercased_and_checked() {
        let c = validate(&format!(
            "{MIN}attribute_field = \"otherMailbox\"\nusername_field = \"UID\"\n"
        ))
        .unwrap();
        assert_eq!(c.ldap.attribute_field.as_deref(), Some("othermailbox"));
        assert_eq!(c.ldap.username_field, "uid");
        assert!(validate(&format!("{MIN}username_field = \"ma il\"\n")).is_err());
        assert!(validate(&format!("{MIN}username_field = \"(mail\"\n")).is_err());
    }

    #[test]
    fn bind_dn_without_password_is_refused() {
        let e = validate(&format!("{MIN}bind_dn = \"cn=x\"\n")).unwrap_err();
        assert!(e.contains("unauthenticated"), "{e}");
        let e = validate(&format!(
            "{MIN}bind_dn = \"cn=x\"\nbind_password = \"a\"\nbind_password_file = \"/x\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("both"), "{e}");
    }

    #[test]
    fn messages_have_defaults_and_must_be_one_safe_line() {
        let c = validate(MIN).unwrap();
        for r in Reason::ALL {
            assert_eq!(c.messages.text(r), r.default_text(), "{r:?}");
            check_message(r.default_text()).unwrap();
        }
        let c = validate(&format!(
            "{MIN}[messages]\npassword_expired = \"Change it at https://id.example.org/\"\nlogin_disabled = \"\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.messages.text(Reason::PasswordExpired),
            "Change it at https://id.example.org/"
        );
        assert_eq!(c.messages.text(Reason::LoginDisabled), "");
        assert_eq!(
            c.messages.text(Reason::MustChangePassword),
            Reason::MustChangePassword.default_text()
        );
        // Non-ASCII text is one line too.
        assert!(validate(&format!(
            "{MIN}[messages]\nworkstation = \"Nicht von hier aus möglich.\"\n"
        ))
        .is_ok());
        for (bad, why) in [
            ("a\\r\\nb", "U+000D"),
            ("a\\nb", "U+000A"),
            ("a\\tb", "U+0009"),
            ("a\\u0000b", "U+0000"),
            ("a\\u007fb", "U+007F"),
            ("[ALERT] x", "starts with '['"),
            (" x", "space"),
        ] {
            let e =
                validate(&format!("{MIN}[messages]\naccount_expired = \"{bad}\"\n")).unwrap_err();
            assert!(
                e.contains("messages.account_expired") && e.contains(why),
                "{bad}: {e}"
            );
        }
        let long = "x".repeat(MAX_MESSAGE_LEN + 1);
        let e = validate(&format!("{MIN}[messages]\nlogon_hours = \"{long}\"\n")).unwrap_err();
        assert!(e.contains("at most 300"), "{e}");
        // Unknown keys are refused, as everywhere.
        let e = validate(&format!("{MIN}[messages]\nlocked_out = \"x\"\n")).unwrap_err();
        assert!(e.contains("locked_out"), "{e}");
    }

    #[test]
    fn passdb_mode() {
        let db = "[database]\npassword = \"p\"\n";
        assert!(validate(&format!("{MIN}{db}")).unwrap().full_passdb);
        assert!(!validate(MIN).unwrap().full_passdb);
        let c = validate(&format!("{MIN}{db}[mailcow]\npassdb = \"ldap-only\"\n")).unwrap();
        assert!(!c.full_passdb);
        let e = validate(&format!("{MIN}[mailcow]\npassdb = \"full\"\n")).unwrap_err();
        assert!(e.contains("[database]"), "{e}");
        let e = validate(&format!("{MIN}{db}[mailcow]\npassdb = \"Full\"\n")).unwrap_err();
        assert!(e.contains("must be"), "{e}");
    }

    #[test]
    fn sogo_address() {
        assert_eq!(validate(MIN).unwrap().sogo_address, None);
        let c = validate(&format!(
            "{MIN}[mailcow]\nsogo_address = \"172.22.1.248\"\n"
        ))
        .unwrap();
        assert_eq!(c.sogo_address, Some("172.22.1.248".parse().unwrap()));
        let e = validate(&format!("{MIN}[mailcow]\nsogo_address = \"172.22.1\"\n")).unwrap_err();
        assert!(
            e.contains("mailcow.sogo_address") && e.contains("IP address"),
            "{e}"
        );
    }

    #[test]
    fn sogo_sso_file_needs_the_address_and_a_database() {
        let db = "[database]\npassword = \"p\"\n";
        let file = "sogo_sso_file = \"/etc/sogo-sso/sogo-sso.pass\"\n";
        let c = validate(&format!(
            "{MIN}{db}[mailcow]\nsogo_address = \"172.22.1.248\"\n{file}"
        ))
        .unwrap();
        assert_eq!(
            c.sogo_sso_file.as_deref(),
            Some(Path::new("/etc/sogo-sso/sogo-sso.pass"))
        );
        let e = validate(&format!("{MIN}{db}[mailcow]\n{file}")).unwrap_err();
        assert!(e.contains("needs mailcow.sogo_address"), "{e}");
        let e = validate(&format!(
            "{MIN}[mailcow]\nsogo_address = \"172.22.1.248\"\n{file}"
        ))
        .unwrap_err();
        assert!(e.contains("[database]"), "{e}");
        assert_eq!(validate(MIN).unwrap().sogo_sso_file, None);
    }

    #[test]
    fn missing_required_keys_are_named() {
        assert!(validate("[ldap]\nbase_dn = \"x\"\n")
            .unwrap_err()
            .contains("ldap.hosts"));
        assert!(validate("[ldap]\nhosts = \"x\"\n")
            .unwrap_err()
            .contains("ldap.base_dn"));
        assert!(
            validate(&format!("{MIN}[mailcow]\nsettings_from_database = true\n"))
                .unwrap_err()
                .contains("[database]")
        );
        assert!(validate(&format!("{MIN}[sync]\ninterval_minutes = 0\n"))
            .unwrap_err()
            .contains("at least 1"));
        assert!(validate(&format!("log_target = \"x\"\n{MIN}"))
            .unwrap_err()
            .contains("log_target"));
    }

    #[test]
    fn file_keys_win_over_ui_settings() {
        let raw = parse_str("[ldap]\nport = 1389\n").unwrap();
        let ui = UiSettings {
            ldap: RawLdap {
                hosts: Some(HostList::One("ui-host".into())),
                port: Some(389),
                base_dn: Some("dc=ui".into()),
                ..Default::default()
            },
            mappings: Some(vec![RawMapping {
                attribute: "a".into(),
                template: "T".into(),
                action: None,
            }]),
            ..Default::default()
        };
        let c = raw.validate(Path::new("t"), ui).unwrap();
        assert_eq!(
            c.ldap.hosts,
            vec![Host {
                name: "ui-host".into(),
                port: 1389
            }]
        );
        assert_eq!(c.ldap.base_dn, "dc=ui");
        assert_eq!(
            c.mappings,
            vec![Mapping {
                attribute: "a".into(),
                template: "T".into(),
                action: None,
            }]
        );
    }

    #[test]
    fn database_section() {
        let c = validate(&format!("{MIN}[database]\npassword = \"p\"\n")).unwrap();
        let d = c.database.unwrap();
        assert!(
            matches!(d.address, DbAddress::Tcp { ref host, port: 3306 } if host == "127.0.0.1")
        );
        assert_eq!(d.name, "mailcow");
        let e = validate(&format!("{MIN}[database]\nsocket = \"/s\"\ntls = true\n")).unwrap_err();
        assert!(e.contains("TCP"), "{e}");
        let e = validate(&format!("{MIN}[database]\nsocket = \"/s\"\nhost = \"h\"\n")).unwrap_err();
        assert!(e.contains("both"), "{e}");
    }

    #[test]
    fn holds_password_detection() {
        assert!(!parse_str(MIN).unwrap().holds_password());
        assert!(parse_str(&format!("{MIN}bind_password = \"x\"\n"))
            .unwrap()
            .holds_password());
        assert!(!parse_str(&format!("{MIN}bind_password_file = \"/x\"\n"))
            .unwrap()
            .holds_password());
        assert!(parse_str(&format!("{MIN}[database]\npassword = \"x\"\n"))
            .unwrap()
            .holds_password());
    }
}
