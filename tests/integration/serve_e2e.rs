//! End to end: `serve` behind the real programs it is made for, against a
//! private slapd:
//!
//! * Dovecot 2.3 with `dovecot-auth-lua` running the shipped Lua script
//!   (`contrib/dovecot-lua/mailcow-ldap-auth.lua`) with the shipped 2.3 config
//!   block, over HTTP with the shared secret; and the passdb chain proposed for
//!   mailcow (`contrib/mailcow/`), with a stand-in for mailcow's own Lua passdb
//!   and PHP endpoint;
//! * Postfix with Cyrus SASL (`smtpd_sasl_type = cyrus`, `pwcheck_method:
//!   saslauthd`) on serve's saslauthd socket, with the shipped
//!   `contrib/postfix/cyrus/` files.
//!
//! Every server is started privately and stopped by its pid when its handle
//! drops (locals drop in reverse order, also on panic).

use crate::support::clients::{contrib, doveadm_text, imap_login, line_with, moved, Conn, Smtp};
use crate::support::dovecot::{Dovecot, MAIL_GID, MAIL_UID};
use crate::support::postfix::Postfix;
use crate::support::serve::Serve;
use crate::support::slapd::HMUELLER_PW;
use crate::support::{free_port, require, run_ok, write_config, Slapd};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const USER: &str = "jdoe@example.org";
const PASSWORD: &str = "secret1";
const UNKNOWN: &str = "nobody-here@example.org";
pub(crate) const SECRET: &str = "e2e-http-secret-5150";
/// How long to wait for a log line written after the client got its answer.
const LOG_WAIT: Duration = Duration::from_secs(10);

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// serve's config: the slapd, Dovecot's mail folder layout, the shared secret.
fn serve_config(root: &Path, slapd: &Slapd, secret_file: Option<&Path>) -> (PathBuf, u16, PathBuf) {
    let state = root.join("serve-state");
    std::fs::create_dir_all(&state).unwrap();
    let extra = secret_file
        .map(|f| format!("http_secret_file = \"{}\"", f.display()))
        .unwrap_or_default();
    let (section, port, socket) = Serve::section(root, &extra);
    let text = format!(
        "state_dir = \"{}\"\nlog_target = \"stderr\"\n{}\n[dovecot]\nuid = \"{MAIL_UID}\"\n\
         gid = \"{MAIL_GID}\"\nhome = \"{}/dovecot/mail/%d/%n\"\n{section}",
        state.display(),
        slapd.ldap_section(),
        root.display(),
    );
    (write_config(root, "serve.toml", &text), port, socket)
}

/// The shared secret, as an admin would keep it: one line, not world-readable.
pub(crate) fn write_secret(root: &Path) -> PathBuf {
    let p = root.join("http-secret");
    std::fs::write(&p, format!("{SECRET}\n")).unwrap();
    set_mode(&p, 0o640);
    p
}

/// The shipped Lua script, copied where Dovecot's auth processes can read it.
pub(crate) fn install_lua(root: &Path) -> PathBuf {
    let dir = root.join("dovecot-lua");
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o755);
    let p = dir.join("mailcow-ldap-auth.lua");
    std::fs::write(&p, contrib("dovecot-lua/mailcow-ldap-auth.lua")).unwrap();
    set_mode(&p, 0o644);
    p
}

/// The shipped Dovecot 2.3 block (contrib/dovecot-lua/dovecot-2.3.conf) with
/// its paths and URL moved to this test.
pub(crate) fn lua_block_23(lua: &Path, serve_port: u16, secret: &Path) -> String {
    let text = contrib("dovecot-lua/dovecot-2.3.conf");
    let text = moved(
        &text,
        "/etc/dovecot/lua/mailcow-ldap-auth.lua",
        &lua.display().to_string(),
    );
    let text = moved(
        &text,
        "http://127.0.0.1:9083",
        &format!("http://127.0.0.1:{serve_port}"),
    );
    moved(
        &text,
        "/etc/dovecot/mailcow-ldap-auth-http.secret",
        &secret.display().to_string(),
    )
}

// ---------------------------------------------------------------------------
// Postfix with Cyrus SASL, and the log and doveadm checks of these tests.

/// Connect to Postfix and say EHLO: Cyrus SASL must offer exactly smtpd.conf's
/// mech_list (the file was read).
fn cyrus_smtp(port: u16) -> Smtp {
    let mut s = Smtp::connect(port);
    let reply = s.ehlo();
    let auth = reply
        .iter()
        .find(|l| l.len() > 4 && l[4..].starts_with("AUTH"))
        .unwrap_or_else(|| panic!("Postfix offers no AUTH: {reply:?}"));
    assert_eq!(
        auth[4..].trim(),
        "AUTH PLAIN LOGIN",
        "Cyrus SASL should offer what smtpd.conf's mech_list says"
    );
    s
}

/// One session with `AUTH PLAIN` (an initial response): the first reply line.
fn auth_plain(port: u16, user: &str, password: &str) -> String {
    let mut s = cyrus_smtp(port);
    let r = s.auth_plain(user, password);
    let _ = s.cmd("QUIT");
    r[0].clone()
}

/// One session with `AUTH LOGIN`, the other mechanism: the final reply line.
fn auth_login(port: u16, user: &str, password: &str) -> String {
    let mut s = cyrus_smtp(port);
    let r = s.auth_login(user, password);
    let _ = s.cmd("QUIT");
    r[0].clone()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> Option<String>) -> String {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until serve's log has a line containing every needle; return that line.
fn serve_log_line(serve: &Serve, needles: &[&str]) -> String {
    wait_for(
        &format!("a serve log line with {needles:?}"),
        LOG_WAIT,
        || line_with(&serve.log_text(), needles).map(str::to_owned),
    )
}

/// `doveadm auth test USER PASSWORD`: (exit code, output).
fn doveadm_auth(dovecot: &Dovecot, user: &str, password: &str) -> (i32, String) {
    let (status, all) = doveadm_text(dovecot, &["auth", "test", user, password]);
    (status.code().unwrap_or(-1), all)
}

// ---------------------------------------------------------------------------
// (a) Dovecot 2.3 + dovecot-auth-lua + the shipped script.

/// slapd, serve (with the shared secret), Dovecot with the shipped Lua block.
struct LuaStack {
    dovecot: Dovecot,
    serve: Serve,
    slapd: Slapd,
    _dir: TempDir,
}

impl LuaStack {
    fn new() -> LuaStack {
        require("dovecot", "dovecot-core");
        assert!(
            Path::new("/usr/lib/dovecot/modules/auth/libauthdb_lua.so").exists(),
            "Dovecot's Lua passdb is missing: install the Debian package dovecot-auth-lua"
        );
        let dir = TempDir::new().unwrap();
        let root = dir.path().to_owned();
        let slapd = Slapd::start(&root);
        let secret = write_secret(&root);
        let (cfg, port, socket) = serve_config(&root, &slapd, Some(&secret));
        let serve = Serve::start(&cfg, port, socket);
        let lua = install_lua(&root);
        let block = lua_block_23(&lua, port, &secret);
        // The helper config the fixture writes is not used: no checkpassword here.
        let dovecot = Dovecot::start_with(&root, &slapd.ldap_section(), |_| block);
        LuaStack {
            dovecot,
            serve,
            slapd,
            _dir: dir,
        }
    }
}

#[test]
fn dovecot_lua_passdb_and_userdb_through_serve() {
    let mut s = LuaStack::new();
    let imap = s.dovecot.imap_port;

    // Right password: the passdb says OK, prefetch takes the userdb fields from it
    // and the IMAP session starts as the mail user.
    let r = imap_login(imap, USER, PASSWORD);
    assert!(
        r.starts_with("OK"),
        "IMAP LOGIN, right password: {r}\n{}",
        s.dovecot.log()
    );
    // What the script sent: service and client address from the request, the secret
    // (else serve would have answered 401 with an error), via HTTP.
    let line = serve_log_line(
        &s.serve,
        &[
            "login user=\"jdoe@example.org\"",
            "service=imap",
            "result=accept",
        ],
    );
    assert!(
        line.contains("rip=127.0.0.1") && line.contains("via=http"),
        "{line}"
    );
    // A session that opens INBOX creates the Maildir in serve's home, as serve's uid.
    {
        let mut c = Conn::open("imap", imap);
        c.line();
        c.send(&format!("a1 LOGIN {USER} {PASSWORD}"));
        c.send("a2 SELECT INBOX");
        c.send("a3 LOGOUT");
        while !c.line().starts_with("a3 ") {}
        assert!(
            c.transcript.contains("a2 OK"),
            "SELECT INBOX: {}\n{}",
            c.transcript,
            s.dovecot.log()
        );
    }
    let maildir = s.dovecot.home_of(USER).join("Maildir");
    let meta = std::fs::metadata(&maildir)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", maildir.display(), s.dovecot.log()));
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (MAIL_UID, MAIL_GID));

    // Wrong password and unknown user: a plain rejection.
    let r = imap_login(imap, USER, "Wr0ng-lua-1");
    assert!(
        r.starts_with("NO [AUTHENTICATIONFAILED]"),
        "wrong password: {r}"
    );
    let r = imap_login(imap, UNKNOWN, PASSWORD);
    assert!(
        r.starts_with("NO [AUTHENTICATIONFAILED]"),
        "unknown user: {r}"
    );

    // The JSON the script writes: non-ASCII, quote and backslash survive the trip.
    let (code, out) = doveadm_auth(&s.dovecot, "hans.mueller@example.org", HMUELLER_PW);
    assert_eq!(code, 0, "non-ASCII password: {out}\n{}", s.dovecot.log());
    let (code, out) = doveadm_auth(&s.dovecot, USER, "q\"uo\\te\tx");
    assert!(
        code == 77 && !out.contains("temp_fail"),
        "a wrong password with JSON specials is a plain failure: {code} {out}\n{}",
        s.dovecot.log()
    );

    // userdb through /lookup (LMTP, doveadm).
    let (status, fields, all) = s.dovecot.user_fields(USER);
    assert!(status.success(), "{all}");
    assert_eq!(fields.get("uid"), Some(&MAIL_UID.to_string()), "{all}");
    assert_eq!(fields.get("gid"), Some(&MAIL_GID.to_string()), "{all}");
    assert_eq!(
        fields.get("home"),
        Some(&s.dovecot.home_of(USER).display().to_string()),
        "{all}"
    );
    let (status, _, all) = s.dovecot.user_fields(UNKNOWN);
    assert_eq!(status.code(), Some(67), "unknown user in the userdb: {all}");

    // The directory goes away: a temporary failure, never "wrong password".
    s.slapd.stop();
    let from = s.dovecot.log_len();
    let r = imap_login(imap, USER, PASSWORD);
    assert!(
        r.starts_with("NO [UNAVAILABLE]"),
        "slapd stopped: {r}\n{}",
        s.dovecot.log()
    );
    let log = s.dovecot.wait_for_log(
        from,
        "mailcow-ldap-auth: temporary failure: HTTP 503",
        LOG_WAIT,
    );
    assert!(!log.contains("Password mismatch"), "{log}");
    let (status, _, all) = s.dovecot.user_fields(USER);
    assert!(
        !status.success() && status.code() != Some(67),
        "userdb while slapd is down: a temporary failure, not \"unknown\": {all}"
    );
    // ... and back: no restart of anything.
    s.slapd.run();
    let r = imap_login(imap, USER, PASSWORD);
    assert!(r.starts_with("OK"), "slapd back: {r}\n{}", s.dovecot.log());

    // serve itself gone: also temporary (the HTTP client's own 9xxx error).
    s.serve.stop();
    let from = s.dovecot.log_len();
    let r = imap_login(imap, USER, PASSWORD);
    assert!(r.starts_with("NO [UNAVAILABLE]"), "serve stopped: {r}");
    s.dovecot.wait_for_log(
        from,
        "mailcow-ldap-auth: temporary failure: no answer",
        LOG_WAIT,
    );

    let all = format!("{}{}", s.dovecot.log(), s.serve.log_text());
    for pw in [PASSWORD, "Wr0ng-lua-1", HMUELLER_PW, SECRET] {
        assert!(!all.contains(pw), "{pw:?} reached a log:\n{all}");
    }
}

/// Dovecot 2.3's Lua HTTP client always sends `Expect: 100-continue` with a
/// payload (`set_payload` passes sync=TRUE) and waits up to 2 s for
/// `100 Continue` before sending the body anyway (lib-http,
/// HTTP_CLIENT_CONTINUE_TIMEOUT_MSECS). RFC 9110 §10.1.1: a server receiving
/// that expectation must answer `100 Continue` (or a final status) at once.
#[test]
fn lua_logins_are_not_held_up_by_expect_100_continue() {
    let s = LuaStack::new();
    // What it costs a login (serve itself answers in milliseconds).
    let t = Instant::now();
    let r = imap_login(s.dovecot.imap_port, USER, PASSWORD);
    let took = t.elapsed();
    assert!(r.starts_with("OK"), "{r}");
    // The protocol step itself, as Dovecot's client does it.
    let body = format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#);
    let mut c = TcpStream::connect(("127.0.0.1", s.serve.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    c.write_all(
        format!(
            "POST /auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-Auth-Secret: {SECRET}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut first = [0u8; 64];
    let n = c.read(&mut first).unwrap_or(0);
    let interim = String::from_utf8_lossy(&first[..n]).into_owned();
    // Whatever it said, finish the request so that serve's worker is freed.
    let _ = c.write_all(body.as_bytes());
    assert!(
        interim.starts_with("HTTP/1.1 100") && took < Duration::from_millis(1500),
        "serve must answer \"100 Continue\" at once to Expect: 100-continue (got {interim:?} \
         within 1 s); one IMAP login through the Lua passdb took {took:?}"
    );
}

// ---------------------------------------------------------------------------
// The chain proposed for mailcow: serve first, mailcow's own passdb after it.

/// A stand-in for mailcow's PHP endpoint (nginx:9082 -> mailcowauth.php): it
/// accepts the passwords mailcow itself keeps (mailboxes of authsource
/// `mailcow`, app passwords) and counts the requests it gets.
pub(crate) struct MailcowEndpoint {
    pub(crate) port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub(crate) const LOCAL_USER: &str = "local@example.org";
pub(crate) const LOCAL_PW: &str = "local-mailcow-pw";
pub(crate) const APP_PW: &str = "jdoe-app-password";
/// A mailbox of authsource `keycloak`, and the password its identity provider knows.
pub(crate) const KC_USER: &str = "kc@example.org";
pub(crate) const KC_PW: &str = "kc-idp-password";
/// jdoe's entry in the suite's slapd.
const JDOE_DN: &str = "uid=jdoe,ou=people,dc=example,dc=org";

impl MailcowEndpoint {
    pub(crate) fn start() -> MailcowEndpoint {
        Self::start_with(None)
    }

    /// Like [`MailcowEndpoint::start`], and for jdoe's (an `ldap` mailbox's)
    /// other passwords it binds to `ldap_url` as jdoe, as mailcow's
    /// `user_login()` does for authsource `ldap`: the directory counts each
    /// time mailcow's PHP is asked.
    pub(crate) fn start_binding(ldap_url: String) -> MailcowEndpoint {
        Self::start_with(Some(ldap_url))
    }

    fn start_with(ldap: Option<String>) -> MailcowEndpoint {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                r.fetch_add(1, Ordering::SeqCst);
                let _ = Self::answer(&mut c, ldap.as_deref());
            }
        });
        MailcowEndpoint {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn answer(c: &mut TcpStream, ldap: Option<&str>) -> std::io::Result<()> {
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(c.try_clone()?);
        let mut len = 0usize;
        let mut expect = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            expect |= l.starts_with("expect:") && l.contains("100-continue");
        }
        if expect {
            c.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let (user, pw) = (v["username"].as_str(), v["password"].as_str());
        // mailcowauth.php: apppass_login(), then user_login() (for an
        // `ldap` mailbox: a bind with the password).
        let ok = match (user, pw) {
            (Some(LOCAL_USER), Some(LOCAL_PW))
            | (Some(USER), Some(APP_PW))
            | (Some(KC_USER), Some(KC_PW)) => true,
            (Some(USER), Some(pw)) => ldap.is_some_and(|url| {
                ldap3::LdapConn::new(url)
                    .and_then(|mut l| l.simple_bind(JDOE_DN, pw))
                    .is_ok_and(|r| r.rc == 0)
            }),
            _ => false,
        };
        // mailcowauth.php answers 200 either way, with success true or false.
        let out = format!(r#"{{"success":{ok},"role":false}}"#);
        c.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{out}",
                out.len()
            )
            .as_bytes(),
        )
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for MailcowEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A stand-in for mailcow's passwd-verify.lua: the same request and the same
/// answers (mailcow's script needs LuaSocket and cjson, which Debian's Dovecot
/// does not have; this one uses dovecot.http instead).
pub(crate) fn mailcow_lua_stand_in(port: u16) -> String {
    format!(
        r#"-- Stand-in for mailcow's data/conf/dovecot/auth/passwd-verify.lua (tests only).
local client = nil
local function esc(s) return (tostring(s):gsub('[%c"\\]', function(c)
  return string.format("\\u%04x", c:byte()) end)) end
function auth_password_verify(req, password)
  if req.domain == nil then
    return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "No such user"
  end
  client = client or dovecot.http.client({{ request_timeout_msecs = 5000, max_attempts = 1 }})
  local r = client:request({{ url = "http://127.0.0.1:{port}/", method = "POST" }})
  r:add_header("Content-Type", "application/json")
  r:set_payload('{{"username":"' .. esc(req.user) .. '","password":"' .. esc(password) ..
    '","real_rip":"' .. esc(req.real_rip or "") .. '","service":"' .. esc(req.service) .. '"}}')
  local resp = r:submit()
  if resp:status() ~= 200 and resp:status() ~= 401 then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "Upstream error"
  end
  if resp:payload():find('"success":true', 1, true) then
    return dovecot.auth.PASSDB_RESULT_OK, ""
  end
  return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "Failed to authenticate"
end
function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, ""
end
"#
    )
}

/// Dovecot's passdbs as in mailcow's `data/conf/dovecot/dovecot.conf`, with
/// the shipped pieces inserted: extra.conf's import_environment, then the
/// shipped passdb (`contrib/mailcow/dovecot/mailcow-ldap-auth-passdb.conf`)
/// before mailcow's three passdbs, whose passwd-verify.lua is stood in for
/// by [`mailcow_lua_stand_in`] asking the endpoint on `endpoint_port`.
pub(crate) fn mailcow_chain(
    root: &Path,
    serve_port: u16,
    secret: &Path,
    endpoint_port: u16,
) -> String {
    let lua = install_lua(root);
    let stand_in = root.join("dovecot-lua").join("passwd-verify.lua");
    std::fs::write(&stand_in, mailcow_lua_stand_in(endpoint_port)).unwrap();
    set_mode(&stand_in, 0o644);
    let extra = contrib("mailcow/dovecot/extra.conf");
    let extra = moved(
        &extra,
        "http://ldap-auth-mailcow:9083",
        &format!("http://127.0.0.1:{serve_port}"),
    );
    let extra = moved(
        &extra,
        "/etc/dovecot/mailcow-ldap-auth/http-secret",
        &secret.display().to_string(),
    );
    let ours = contrib("mailcow/dovecot/mailcow-ldap-auth-passdb.conf");
    let ours = moved(
        &ours,
        "/etc/dovecot/mailcow-ldap-auth/mailcow-ldap-auth.lua",
        &lua.display().to_string(),
    );
    let master = root.join("dovecot-master.passwd");
    std::fs::write(&master, "").unwrap();
    set_mode(&master, 0o644);
    format!(
        "{extra}\n{ours}\n\
         # mailcow's own passdbs (data/conf/dovecot/dovecot.conf), its script stood in for.\n\
         passdb {{\n  driver = lua\n  args = file={s} blocking=yes\n  result_success = return-ok\n\
         \x20 result_failure = continue\n  result_internalfail = continue\n}}\n\
         passdb {{\n  driver = passwd-file\n  args = {m}\n  master = yes\n  skip = authenticated\n}}\n\
         passdb {{\n  driver = lua\n  args = file={s} blocking=yes\n}}\n\
         userdb {{\n  driver = static\n  args = uid={MAIL_UID} gid={MAIL_GID} home={r}/dovecot/mail/%d/%n\n}}\n",
        s = stand_in.display(),
        m = master.display(),
        r = root.display(),
    )
}

#[test]
fn mailcow_chain_serve_first_then_mailcow() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().to_owned();
    let mut slapd = Slapd::start(&root);
    let secret = write_secret(&root);
    let (cfg, port, socket) = serve_config(&root, &slapd, Some(&secret));
    let serve = Serve::start(&cfg, port, socket);
    let endpoint = MailcowEndpoint::start();
    let block = mailcow_chain(&root, port, &secret, endpoint.port);
    let dovecot = Dovecot::start_with(&root, &slapd.ldap_section(), |_| block);
    let imap = dovecot.imap_port;
    let login = |user: &str, pw: &str| imap_login(imap, user, pw);

    // An LDAP user with the LDAP password: serve says yes, mailcow is not asked.
    let before = endpoint.count();
    let r = login(USER, PASSWORD);
    assert!(r.starts_with("OK"), "LDAP password: {r}\n{}", dovecot.log());
    assert_eq!(
        endpoint.count(),
        before,
        "mailcow was asked although serve accepted"
    );
    serve_log_line(
        &serve,
        &["login user=\"jdoe@example.org\"", "result=accept"],
    );

    // An app password (kept by mailcow): serve says no, mailcow says yes.
    let r = login(USER, APP_PW);
    assert!(r.starts_with("OK"), "app password: {r}\n{}", dovecot.log());
    // A mailbox of authsource mailcow: not in LDAP, mailcow says yes.
    let r = login(LOCAL_USER, LOCAL_PW);
    assert!(
        r.starts_with("OK"),
        "mailcow mailbox: {r}\n{}",
        dovecot.log()
    );
    // Wrong everywhere: a plain failure.
    let r = login(USER, "Wr0ng-chain-2");
    assert!(
        r.starts_with("NO [AUTHENTICATIONFAILED]"),
        "wrong password: {r}"
    );

    // LDAP down: mailcow's own mailboxes and app passwords keep working, an LDAP
    // password gets "temporary failure" although mailcow's passdb said "mismatch".
    slapd.stop();
    let r = login(LOCAL_USER, LOCAL_PW);
    assert!(
        r.starts_with("OK"),
        "mailcow mailbox during an LDAP outage: {r}"
    );
    let r = login(USER, APP_PW);
    assert!(
        r.starts_with("OK"),
        "app password during an LDAP outage: {r}"
    );
    let r = login(USER, PASSWORD);
    assert!(
        r.starts_with("NO [UNAVAILABLE]"),
        "LDAP password during an LDAP outage: {r}\n{}",
        dovecot.log()
    );
    slapd.run();
    let r = login(USER, PASSWORD);
    assert!(r.starts_with("OK"), "LDAP back: {r}");
}

// ---------------------------------------------------------------------------
// (b) Postfix + Cyrus SASL on serve's saslauthd socket.

#[test]
fn postfix_cyrus_sasl_through_serve_socket() {
    require("postfix", "postfix");
    let plain = [
        "/usr/lib/x86_64-linux-gnu/sasl2",
        "/usr/lib/sasl2",
        "/usr/lib64/sasl2",
    ]
    .iter()
    .flat_map(|d| std::fs::read_dir(d).into_iter().flatten())
    .flatten()
    .any(|e| e.file_name().to_string_lossy().starts_with("libplain.so"));
    assert!(
        plain,
        "Cyrus SASL's PLAIN mechanism is missing: install the Debian package libsasl2-modules"
    );
    let dir = TempDir::new().unwrap();
    let root = dir.path().to_owned();
    // Postfix's smtpd (user postfix) must reach the socket below the folder.
    set_mode(&root, 0o755);
    let mut slapd = Slapd::start(&root);
    let (cfg, port, socket) = serve_config(&root, &slapd, None);
    let serve = Serve::start(&cfg, port, socket.clone());

    // The shipped Cyrus files, paths moved to this test. Debian's Postfix reads
    // <config_directory>/sasl/smtpd.conf whatever cyrus_sasl_config_path says
    // (its patch 07_sasl_config), so the file goes there; the setting names it too.
    let sasl_dir = Postfix::queue_dir_for(&root)
        .parent()
        .unwrap()
        .join("etc")
        .join("sasl");
    std::fs::create_dir_all(&sasl_dir).unwrap();
    set_mode(&sasl_dir, 0o755);
    let smtpd_conf = moved(
        &contrib("postfix/cyrus/smtpd.conf"),
        "/run/mailcow-ldap-auth-saslauthd/mux",
        &socket.display().to_string(),
    );
    std::fs::write(sasl_dir.join("smtpd.conf"), smtpd_conf).unwrap();
    set_mode(&sasl_dir.join("smtpd.conf"), 0o644);
    let main_cf = moved(
        &contrib("postfix/cyrus/main.cf.snippet"),
        "cyrus_sasl_config_path = /etc/postfix/sasl",
        &format!("cyrus_sasl_config_path = {}", sasl_dir.display()),
    );
    // No TLS in the tests: offer AUTH without STARTTLS.
    let extra = format!("{main_cf}\nsmtpd_tls_auth_only = no\n");
    // The Dovecot port is not used: the snippet switches smtpd_sasl_type to cyrus.
    let postfix = Postfix::start_with(&root, free_port(), &extra);
    let out = run_ok(
        Command::new("postconf")
            .arg("-c")
            .arg(&postfix.conf_dir)
            .args(["-h", "smtpd_sasl_type"]),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cyrus");
    let smtp = postfix.smtp_port;

    let r = auth_plain(smtp, USER, PASSWORD);
    assert!(
        r.starts_with("235 "),
        "AUTH PLAIN, right password: {r}\n{}",
        postfix.log()
    );
    let line = serve_log_line(
        &serve,
        &[
            "login user=\"jdoe@example.org\"",
            "result=accept",
            "via=saslauthd",
        ],
    );
    assert!(line.contains("service=smtp"), "{line}");
    let r = auth_login(smtp, USER, PASSWORD);
    assert!(r.starts_with("235 "), "AUTH LOGIN, right password: {r}");
    let r = auth_plain(smtp, USER, "Wr0ng-cyrus-3");
    assert!(r.starts_with("535 "), "AUTH PLAIN, wrong password: {r}");
    let r = auth_plain(smtp, UNKNOWN, PASSWORD);
    assert!(r.starts_with("535 "), "AUTH PLAIN, unknown user: {r}");

    // LDAP down: serve closes without an answer, Postfix says "try later".
    slapd.stop();
    let r = auth_plain(smtp, USER, PASSWORD);
    assert!(
        r.starts_with("454 "),
        "AUTH PLAIN while slapd is down: {r}\n{}",
        postfix.log()
    );
    slapd.run();
    let r = auth_plain(smtp, USER, PASSWORD);
    assert!(r.starts_with("235 "), "AUTH PLAIN, slapd back: {r}");

    let all = format!("{}{}", postfix.log(), serve.log_text());
    for pw in [PASSWORD, "Wr0ng-cyrus-3"] {
        assert!(!all.contains(pw), "{pw:?} reached a log:\n{all}");
    }
}

// ---------------------------------------------------------------------------
// The shipped mailcow configuration of serve (contrib/mailcow/serve.toml).

#[test]
fn mailcow_serve_config_as_shipped() {
    use crate::provision::Env as DbEnv;
    use crate::support::mariadb::PASSWORD as DB_PASSWORD;
    use crate::support::slapd::{BASE, READER_DN, READER_PW};
    let e = DbEnv::new();
    // mailcow's UI settings: the LDAP identity provider, login provisioning with
    // the mapping "default" -> Staff.
    e.db.sql(&format!(
        "INSERT INTO identity_provider (`key`, `value`) VALUES ('authsource', 'ldap'), ('host', '127.0.0.1'), \
         ('port', '{}'), ('basedn', '{BASE}'), ('username_field', 'mail'), ('filter', ''), \
         ('attribute_field', 'othermailbox'), ('binddn', '{READER_DN}'), ('bindpass', '{READER_PW}'), \
         ('use_ssl', ''), ('use_tls', ''), ('ignore_ssl_error', ''), ('mappers', '[\"default\"]'), \
         ('templates', '[\"Staff\"]'), ('login_provisioning', '1'), ('import_users', '0'), \
         ('periodic_sync', '0'), ('sync_interval', '15')",
        e.slapd.port
    ));
    let root = e.path();
    let db_pw = root.join("db-password");
    std::fs::write(&db_pw, format!("{DB_PASSWORD}\n")).unwrap();
    set_mode(&db_pw, 0o600);
    let secret = write_secret(root);
    let port = free_port();
    let socket = root.join("sasl").join("mux");
    let text = contrib("mailcow/serve.toml");
    let text = moved(
        &text,
        "\"/run/mailcow-ldap-auth\"",
        &format!("\"{}\"", root.display()),
    );
    let text = moved(&text, "host = \"mysql\"", "host = \"127.0.0.1\"");
    let text = moved(
        &text,
        "port = 3306",
        &format!("port = {}", e.db.server.port),
    );
    let text = moved(
        &text,
        "name = \"mailcow\"",
        &format!("name = \"{}\"", e.db.name),
    );
    let text = moved(
        &text,
        "/etc/mailcow-ldap-auth/db-password",
        &db_pw.display().to_string(),
    );
    let text = moved(&text, "[::]:9083", &format!("127.0.0.1:{port}"));
    let text = moved(
        &text,
        "/etc/dovecot/mailcow-ldap-auth/http-secret",
        &secret.display().to_string(),
    );
    // [serve] is the file's last section: the socket the fixture waits for goes there.
    let text = format!("{text}saslauthd_socket = \"{}\"\n", socket.display());
    let cfg = write_config(root, "mailcow-serve.toml", &text);
    let serve = Serve::start(&cfg, port, socket);

    let body = format!(
        r#"{{"username":"{USER}","password":"{PASSWORD}","real_rip":"192.0.2.7","service":"imap"}}"#
    );
    let r = serve.http("POST", "/auth", &[("X-Auth-Secret", SECRET)], &body);
    assert_eq!(r.status, 200, "{r:?}\n{}", serve.log_text());
    assert_eq!(r.json["user"], USER);
    assert_eq!(r.json["fields"]["uid"], "5000");
    assert_eq!(r.json["fields"]["home"], "/var/vmail/example.org/jdoe");
    // Provisioned from the UI's mapping: Staff, 1 GiB.
    assert_eq!(
        e.db.value("SELECT CONCAT(authsource, ' ', quota) FROM mailbox"),
        "ldap 1073741824"
    );
    assert_eq!(
        serve.http("POST", "/auth", &[], &body).status,
        403,
        "no secret"
    );
}
