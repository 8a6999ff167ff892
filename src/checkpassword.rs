//! Dovecot's checkpassword protocol (Dovecot 2.3, `passdb`/`userdb` driver
//! `checkpassword`):
//!
//! * fd 3 carries `user \0 password \0 timestamp \0`, at most 512 bytes;
//! * on success the helper sets `USER`, `HOME`, `EXTRA` and the `userdb_*`
//!   variables and execs the reply program given as its last arguments;
//! * otherwise it exits with the status [`crate::outcome`] decides.

use crate::auth::{self, Accepted, Request};
use crate::db_slot::OneShot;
use crate::directory::{Backend, Silent};
use crate::log;
use crate::mailcow;
use crate::outcome::{Failure, RequestKind, Verdict};
use crate::secret::Secret;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Dovecot never sends more than this on fd 3.
pub const MAX_INPUT: usize = 512;

/// The fields read from fd 3.
#[derive(Debug)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

/// Parse the bytes read from fd 3. `Err(Misuse)` for a malformed stream,
/// `Err(BadRequest)` for one that is well formed but unusable.
pub fn parse_input(buf: &[u8]) -> Result<Credentials, Failure> {
    if buf.len() > MAX_INPUT {
        return Err(Failure::Misuse(format!(
            "more than {MAX_INPUT} bytes on fd 3"
        )));
    }
    let mut fields = buf.splitn(3, |&b| b == 0);
    let user = fields.next().unwrap_or_default();
    let password = fields.next();
    // Two NUL terminators at least: after the user and after the password.
    let (Some(password), Some(_rest)) = (password, fields.next()) else {
        return Err(Failure::Misuse(
            "fd 3 is not \"user\\0password\\0...\" (missing NUL separator)".into(),
        ));
    };
    let user = std::str::from_utf8(user)
        .map_err(|_| Failure::BadRequest("login is not UTF-8".into()))?
        .to_owned();
    let password = std::str::from_utf8(password)
        .map_err(|_| Failure::BadRequest("password is not UTF-8".into()))?;
    Ok(Credentials {
        user,
        password: Secret::new(password.to_owned()),
    })
}

/// Read fd 3 to its end, at most `MAX_INPUT + 1` bytes.
fn read_fd3() -> Result<Zeroizing<Vec<u8>>, Failure> {
    use std::os::fd::FromRawFd;
    // Check that fd 3 is open before taking ownership of it: if it is not,
    // a later open() could receive number 3 and we would read the wrong file.
    if std::fs::symlink_metadata("/proc/self/fd/3").is_err() {
        return Err(Failure::Misuse(
            "fd 3 is not open (run by Dovecot's checkpassword driver, or use `test USER` by hand)"
                .into(),
        ));
    }
    // SAFETY: fd 3 is open (checked above) and, by the checkpassword protocol,
    // belongs to this process to read and close; nothing else in the program
    // uses it, and the File closes it when dropped, so no child inherits it.
    #[allow(unsafe_code)]
    let mut f = unsafe { std::fs::File::from_raw_fd(3) };
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_INPUT + 1));
    let mut chunk = Zeroizing::new([0u8; 256]);
    loop {
        match f.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_INPUT {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Misuse(format!("cannot read fd 3: {e}"))),
        }
    }
    Ok(buf)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether Dovecot asks for a lookup rather than a password check.
pub fn request_kind() -> RequestKind {
    if env("AUTHORIZED").as_deref() == Some("1")
        || env("CREDENTIALS_LOOKUP").as_deref() == Some("1")
    {
        RequestKind::Lookup
    } else {
        RequestKind::Password
    }
}

/// Exits the process with 111 if the login is still running at its deadline:
/// a hung server must not pile up helper processes (Dovecot imposes no
/// timeout). One thread; the deadline can be moved once the config is read.
struct Watchdog {
    limit_ms: Arc<AtomicU64>,
    thread: std::thread::Thread,
}

impl Watchdog {
    fn start(started: Instant, limit: Duration) -> Option<Watchdog> {
        let limit_ms = Arc::new(AtomicU64::new(limit.as_millis() as u64));
        let shared = limit_ms.clone();
        let handle = std::thread::Builder::new()
            .name("watchdog".into())
            // It only sleeps and logs one line: a small stack is cheaper to set up.
            .stack_size(64 * 1024)
            .spawn(move || loop {
                let limit = Duration::from_millis(shared.load(Ordering::SeqCst));
                let elapsed = started.elapsed();
                if elapsed >= limit {
                    log::error(&format!(
                        "result=tempfail reason=\"hard time limit of {} ms reached\"",
                        limit.as_millis()
                    ));
                    std::process::exit(i32::from(Verdict::Temporary.exit_code()));
                }
                std::thread::park_timeout(limit - elapsed);
            })
            .ok()?;
        Some(Watchdog {
            limit_ms,
            thread: handle.thread().clone(),
        })
    }

    /// Move the deadline to `limit` after the start.
    fn set(&self, limit: Duration) {
        self.limit_ms
            .store(limit.as_millis() as u64, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// What the log line says about the request besides its result.
struct Context {
    kind: RequestKind,
    service: Option<String>,
    remote_ip: Option<String>,
    started: Instant,
}

/// The `checkpassword` command. `reply` is the reply program and its arguments.
pub fn run(config_path: &Path, reply: &[OsString]) -> ExitCode {
    let started = Instant::now();
    // Bound even a read of fd 3 that never ends (fd 3 a terminal, say).
    let watchdog = Watchdog::start(started, Duration::from_secs(15));
    // fd 3 first, before anything else could be given that number.
    let input = read_fd3();
    let ctx = Context {
        kind: request_kind(),
        service: env("SERVICE").map(|s| s.to_ascii_lowercase()),
        remote_ip: env("TCPREMOTEIP").or_else(|| env("REMOTE_IP")),
        started,
    };

    // The configuration (and, with settings_from_database, mailcow's own settings).
    let (cfg, store) = match mailcow::load_config(config_path, started + Duration::from_secs(10)) {
        Ok(c) => c,
        Err(f) => return finish(&ctx, None, Err(f), None, None, reply),
    };
    log::init(cfg.log_target);
    if let Some(w) = &watchdog {
        w.set(cfg.login_timeout + Duration::from_millis(500));
    }
    if cfg.ldap.ignore_ssl_errors {
        log::warn("ldap.ignore_ssl_errors = true: the directory's TLS certificate is NOT verified");
    }

    let creds = match input.and_then(|buf| parse_input(&buf)) {
        Ok(c) => c,
        Err(f) => return finish(&ctx, None, Err(f), None, None, reply),
    };
    if reply.is_empty() {
        let f =
            Failure::Misuse("no reply program given: usage `checkpassword REPLY [ARGS...]`".into());
        return finish(&ctx, Some(&creds.user), Err(f), None, None, reply);
    }
    let request = Request {
        login: creds.user,
        password: Some(creds.password),
        kind: ctx.kind,
        service: ctx.service.clone(),
        remote_ip: ctx.remote_ip.clone(),
        dry_run: false,
    };
    let mut db = OneShot::new(cfg.database.as_ref(), store);
    let decision = auth::decide(
        &cfg,
        Backend::OneShot(&cfg.state_dir),
        &mut db,
        &request,
        started + cfg.login_timeout,
        &mut Silent,
    );
    let Request {
        login, password, ..
    } = request;
    drop(password);
    // The password was right but the login is refused with a reason
    // (auth::decide left only those with a text).
    let told = match &decision.result {
        Err(Failure::NoLogin(r, _)) if ctx.kind == RequestKind::Password => {
            Some(cfg.messages.text(*r).to_owned())
        }
        _ => None,
    };
    finish(
        &ctx,
        Some(&login),
        decision.result,
        decision.host.as_deref(),
        told.as_deref(),
        reply,
    )
}

/// Log the decision, then exec the reply program or exit. `told`: the
/// text of a refusal the user is told ([`Failure::NoLogin`]).
fn finish(
    ctx: &Context,
    login: Option<&str>,
    result: Result<Accepted, Failure>,
    host: Option<&str>,
    told: Option<&str>,
    reply: &[OsString],
) -> ExitCode {
    let verdict = auth::log_decision(&auth::LogLine {
        kind: ctx.kind,
        login: login.unwrap_or(""),
        service: ctx.service.as_deref(),
        remote_ip: ctx.remote_ip.as_deref(),
        result: &result,
        host,
        started: ctx.started,
        via: None,
    });
    match (result, told) {
        (Ok(acc), _) => exec_reply(reply_env(&acc, ctx.kind), reply),
        (Err(_), Some(text)) if !text.is_empty() => exec_reply(nologin_env(text), reply),
        (Err(_), _) => exit(verdict),
    }
}

fn exit(v: Verdict) -> ExitCode {
    ExitCode::from(v.exit_code())
}

/// The environment the reply program reads, in order.
pub fn reply_env(acc: &Accepted, kind: RequestKind) -> Vec<(String, String)> {
    let mut vars = vec![
        ("USER".to_owned(), acc.user.clone()),
        ("HOME".to_owned(), acc.fields.home.clone()),
    ];
    let mut extra = Vec::new();
    for (name, value) in acc.fields.pairs() {
        let var = format!("userdb_{name}");
        extra.push(var.clone());
        vars.push((var, value));
    }
    vars.push(("EXTRA".to_owned(), extra.join(" ")));
    if kind == RequestKind::Lookup {
        vars.push(("AUTHORIZED".to_owned(), "2".to_owned()));
    }
    vars
}

/// The environment of the reply program for a refusal the user is told:
/// Dovecot's passdb fields `nologin` and `reason` (checkpassword-reply
/// passes on the variables EXTRA names, lower-cased). The passdb then
/// succeeds with `nologin`, and Dovecot refuses the login with the reason as
/// its text (2.3 `auth-request-handler.c`, `login-common/client-common-auth.c`;
/// Debian 12's 2.3.19 answers IMAP `NO [CONTACTADMIN] text`). `HOME` and
/// `USER` are dropped, so no userdb field and no renamed login go back with it.
pub fn nologin_env(text: &str) -> Vec<(String, String)> {
    vec![
        ("nologin".to_owned(), "Y".to_owned()),
        ("reason".to_owned(), text.to_owned()),
        ("EXTRA".to_owned(), "nologin reason".to_owned()),
    ]
}

/// Replace this process with the reply program (fd 4 stays open for it),
/// with `vars` set.
fn exec_reply(vars: Vec<(String, String)>, reply: &[OsString]) -> ExitCode {
    let Some((prog, args)) = reply.split_first() else {
        return exit(Verdict::Misuse);
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if vars.iter().any(|(k, _)| k == "nologin") {
        cmd.env_remove("HOME").env_remove("USER");
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let err = cmd.exec();
    log::error(&format!(
        "cannot run the reply program {}: {err}",
        log::clean(&prog.to_string_lossy())
    ));
    exit(Verdict::Temporary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserFields;

    #[test]
    fn parses_dovecot_input() {
        let c = parse_input(b"jo@ex.org\0s3cret\0\0").unwrap();
        assert_eq!(c.user, "jo@ex.org");
        assert_eq!(c.password.expose(), "s3cret");
        // No timestamp terminator: still two fields.
        let c = parse_input(b"jo\0pw\0").unwrap();
        assert_eq!(c.password.expose(), "pw");
        // Empty password is parsed (and refused later, by the decision).
        assert!(parse_input(b"jo\0\0\0").unwrap().password.is_empty());
        // A password may contain anything but NUL, UTF-8 included.
        assert_eq!(
            parse_input("jo\0pä ss\0\0".as_bytes())
                .unwrap()
                .password
                .expose(),
            "pä ss"
        );
    }

    #[test]
    fn malformed_input_is_misuse_or_bad_request() {
        assert!(matches!(
            parse_input(b"no-nul-at-all"),
            Err(Failure::Misuse(_))
        ));
        assert!(matches!(
            parse_input(b"user\0password"),
            Err(Failure::Misuse(_))
        ));
        assert!(matches!(parse_input(b""), Err(Failure::Misuse(_))));
        assert!(matches!(parse_input(&[b'a'; 600]), Err(Failure::Misuse(_))));
        assert!(matches!(
            parse_input(b"\xff\xfe\0pw\0\0"),
            Err(Failure::BadRequest(_))
        ));
        assert!(matches!(
            parse_input(b"jo\0\xff\0\0"),
            Err(Failure::BadRequest(_))
        ));
    }

    #[test]
    fn reply_environment() {
        let acc = Accepted {
            user: "jo@ex.org".into(),
            fields: UserFields {
                uid: "vmail".into(),
                gid: "vmail".into(),
                home: "/h/jo".into(),
                quota_bytes: Some(5),
            },
        };
        let env = reply_env(&acc, RequestKind::Password);
        assert_eq!(env[0], ("USER".into(), "jo@ex.org".into()));
        assert!(env.contains(&(
            "EXTRA".into(),
            "userdb_uid userdb_gid userdb_home userdb_quota_rule".into()
        )));
        assert!(env.contains(&("userdb_quota_rule".into(), "*:bytes=5".into())));
        assert!(!env.iter().any(|(k, _)| k == "AUTHORIZED"));
        let env = reply_env(&acc, RequestKind::Lookup);
        assert!(env.contains(&("AUTHORIZED".into(), "2".into())));
    }

    #[test]
    fn nologin_environment() {
        let env = nologin_env("Your password has expired.");
        assert!(env.contains(&("EXTRA".into(), "nologin reason".into())));
        assert!(env.contains(&("nologin".into(), "Y".into())));
        assert!(env.contains(&("reason".into(), "Your password has expired.".into())));
        assert!(!env.iter().any(|(k, _)| k == "USER" || k == "AUTHORIZED"));
    }
}
