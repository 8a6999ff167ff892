//! Minimal mail-protocol clients (IMAP, POP3, ManageSieve, SMTP) and the small
//! helpers the end-to-end tests share: base64 for SASL, `doveadm` output, log
//! lines, and the shipped files under `contrib/`.

use super::dovecot::Dovecot;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// One TCP connection read line by line; the transcript goes into panic messages.
pub struct Conn {
    what: &'static str,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub transcript: String,
}

impl Conn {
    pub fn open(what: &'static str, port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to {what} on port {port}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            what,
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
            transcript: String::new(),
        }
    }

    /// Open, and read the one-line greeting, which must start with `ok`.
    pub fn greeted(what: &'static str, port: u16, ok: &str) -> Conn {
        let mut c = Conn::open(what, port);
        let greeting = c.line();
        assert!(
            greeting.starts_with(ok),
            "{} greeting: {greeting}",
            what.to_uppercase()
        );
        c
    }

    /// One line without its CRLF; panics on EOF or timeout.
    pub fn line(&mut self) -> String {
        let mut buf = String::new();
        match self.reader.read_line(&mut buf) {
            Ok(0) => panic!(
                "{}: connection closed; transcript:\n{}",
                self.what, self.transcript
            ),
            Ok(_) => {}
            Err(e) => panic!("{}: read: {e}; transcript:\n{}", self.what, self.transcript),
        }
        let line = buf.trim_end_matches(['\r', '\n']).to_owned();
        self.transcript.push_str(&format!("S: {line}\n"));
        line
    }

    pub fn send(&mut self, line: &str) {
        self.transcript.push_str(&format!("C: {line}\n"));
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.what));
    }
}

/// RFC 4648 base64 with padding (SASL PLAIN and LOGIN need nothing more).
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SASL PLAIN initial response: `\0user\0password`, base64.
pub fn sasl_plain(user: &str, password: &str) -> String {
    base64(format!("\0{user}\0{password}").as_bytes())
}

/// An IMAP quoted string.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub struct Imap {
    c: Conn,
    tag: u32,
}

impl Imap {
    pub fn connect(port: u16) -> Imap {
        Imap {
            c: Conn::greeted("imap", port, "* OK"),
            tag: 0,
        }
    }

    /// Send a command; return the tagged completion line (tag stripped).
    pub fn cmd(&mut self, command: &str) -> String {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.c.send(&format!("{tag} {command}"));
        loop {
            let line = self.c.line();
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return rest.to_owned();
            }
        }
    }

    pub fn login(&mut self, user: &str, password: &str) -> String {
        self.cmd(&format!("LOGIN {} {}", quoted(user), quoted(password)))
    }
}

/// Connect, LOGIN, and LOGOUT; returns the LOGIN completion.
pub fn imap_login(port: u16, user: &str, password: &str) -> String {
    let mut imap = Imap::connect(port);
    let r = imap.login(user, password);
    let _ = imap.cmd("LOGOUT");
    r
}

pub struct Pop3(Conn);

impl Pop3 {
    pub fn connect(port: u16) -> Pop3 {
        Pop3(Conn::greeted("pop3", port, "+OK"))
    }

    pub fn cmd(&mut self, command: &str) -> String {
        self.0.send(command);
        self.0.line()
    }

    /// `USER` (which must answer `+OK`), then `PASS`: the reply to `PASS`.
    pub fn login(&mut self, user: &str, password: &str) -> String {
        let r = self.cmd(&format!("USER {user}"));
        assert!(r.starts_with("+OK"), "USER: {r}");
        self.cmd(&format!("PASS {password}"))
    }
}

pub struct Sieve(Conn);

impl Sieve {
    /// Connect and read the capability greeting up to its `OK` line.
    pub fn connect(port: u16) -> Sieve {
        let mut c = Conn::open("managesieve", port);
        loop {
            let line = c.line();
            if line.starts_with("OK") {
                return Sieve(c);
            }
            assert!(line.starts_with('"'), "ManageSieve greeting: {line}");
        }
    }

    /// Send a command; skip data lines (quoted strings, literals) up to the
    /// `OK` / `NO` / `BYE` response, which is returned.
    pub fn cmd(&mut self, command: &str) -> String {
        self.0.send(command);
        loop {
            let line = self.0.line();
            if ["OK", "NO", "BYE"].iter().any(|w| line.starts_with(w)) {
                return line;
            }
        }
    }

    /// `AUTHENTICATE "PLAIN"` with an initial response: the response line.
    pub fn authenticate_plain(&mut self, user: &str, password: &str) -> String {
        self.cmd(&format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"",
            sasl_plain(user, password)
        ))
    }
}

pub struct Smtp(Conn);

impl Smtp {
    pub fn connect(port: u16) -> Smtp {
        Smtp(Conn::greeted("smtp", port, "220 "))
    }

    /// Send a command; return every line of the (possibly multi-line) reply.
    pub fn cmd(&mut self, command: &str) -> Vec<String> {
        self.0.send(command);
        let mut lines = Vec::new();
        loop {
            let line = self.0.line();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// EHLO, which must answer 250: the reply (the caller checks what AUTH offers).
    pub fn ehlo(&mut self) -> Vec<String> {
        let reply = self.cmd("EHLO client.example.org");
        assert!(reply[0].starts_with("250"), "EHLO: {reply:?}");
        reply
    }

    /// `AUTH PLAIN` with an initial response: the reply.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Vec<String> {
        self.cmd(&format!("AUTH PLAIN {}", sasl_plain(user, password)))
    }

    /// `AUTH LOGIN`, the other mechanism (both prompts must be 334): the final reply.
    pub fn auth_login(&mut self, user: &str, password: &str) -> Vec<String> {
        let r = self.cmd("AUTH LOGIN");
        assert!(r[0].starts_with("334 "), "AUTH LOGIN: {r:?}");
        let r = self.cmd(&base64(user.as_bytes()));
        assert!(r[0].starts_with("334 "), "AUTH LOGIN user: {r:?}");
        self.cmd(&base64(password.as_bytes()))
    }
}

/// Program output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `doveadm ARGS...`: its exit status and its whole output (stdout, then stderr).
pub fn doveadm_text(dovecot: &Dovecot, args: &[&str]) -> (ExitStatus, String) {
    let out = dovecot.doveadm(args);
    (
        out.status,
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// The first line of `log` that contains every one of `needles`.
pub fn line_with<'a>(log: &'a str, needles: &[&str]) -> Option<&'a str> {
    log.lines().find(|l| needles.iter().all(|n| l.contains(n)))
}

/// A file shipped under `contrib/`.
pub fn contrib(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `text` with `from` replaced by `to`, which must occur: a shipped file that
/// changed shape must fail the test, not silently test something else.
pub fn moved(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{from:?} not found in the shipped file:\n{text}"
    );
    text.replace(from, to)
}
