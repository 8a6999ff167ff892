//! Private servers and helpers for the integration tests. Every server runs
//! from a temporary folder on loopback ports and is stopped by its pid when
//! its handle is dropped.

#![allow(dead_code)]

pub mod clients;
pub mod dovecot;
pub mod mariadb;
pub mod postfix;
pub mod redis;
pub mod samba;
pub mod serve;
pub mod slapd;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use slapd::Slapd;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mailcow-ldap-auth"))
}

/// A loopback port nobody listens on right now, never handed out twice in
/// this test run, nor to another test process running at the same time.
///
/// Ports come from below the kernel's ephemeral range (32768-60999 on Linux),
/// so that an outgoing connection's ephemeral port cannot take a port between
/// the moment it is handed out and the moment its server binds it. Each port
/// handed out is reserved for the life of this process by an `flock` on
/// `/tmp/mla-test-ports/<port>` (released by the kernel when the process
/// ends), which keeps two test processes (two checkouts tested at once) from
/// handing out the same port. Binding port 0 and letting it go handed the same
/// port to two servers of one run ("duplicate listener"), and a plain walk
/// from a per-process start handed one port to two processes (a test then
/// waited on the other process's server).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Mutex;
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = Path::new("/tmp/mla-test-ports");
    let _ = std::fs::create_dir_all(dir);
    let start = LOW + (std::process::id() % u32::from(SPAN)) as u16;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let candidate = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = LOW + (candidate - LOW) % SPAN;
        // Without a usable reservation folder (another user's), the bind
        // check alone decides.
        let reservation = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .ok();
        if reservation.as_ref().is_some_and(|f| f.try_lock().is_err()) {
            continue; // another test process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(reservation);
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN);
}

/// Wait until something accepts TCP connections on `port`, or panic after `limit`.
pub fn wait_for_port(port: u16, limit: Duration, what: &str) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start listening on 127.0.0.1:{port} within {limit:?}");
}

/// Fail with a clear message when a Debian package the tests need is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/lib/dovecot"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} not found: install the Debian package {package} (tests/run.sh does this)");
}

/// Run a command, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A test CA and a server certificate for localhost / 127.0.0.1, made with openssl.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A second CA that did not sign anything the servers use.
    pub other_ca: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> Pki {
        require("openssl", "openssl");
        let p = |n: &str| dir.join(n);
        let ossl = |args: &[&str]| {
            run_ok(Command::new("openssl").args(args).current_dir(dir));
        };
        for (name, cn) in [("ca", "Test CA"), ("other-ca", "Other CA")] {
            ossl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        ossl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Pki {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
            other_ca: p("other-ca.pem"),
        }
    }
}

/// A listener that accepts TCP connections (through the kernel backlog) and
/// never answers: the "silent server".
pub struct SilentServer {
    pub port: u16,
    _listener: TcpListener,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        SilentServer {
            port: l.local_addr().unwrap().port(),
            _listener: l,
        }
    }
}

/// The reply program Dovecot would run: records its arguments and environment.
pub struct StubReply {
    pub path: PathBuf,
    pub out: PathBuf,
}

impl StubReply {
    pub fn create(dir: &Path) -> StubReply {
        let path = dir.join("reply.sh");
        let out = dir.join("reply.env");
        std::fs::write(
            &path,
            "#!/bin/sh\n# Test stand-in for checkpassword-reply: record, then exit as it would.\n\
             { echo \"ARGS=$*\"; echo \"CORE_LIMITS=$(ulimit -S -c) $(ulimit -H -c)\"; env; } > \"$1\"\n\
             if [ \"$AUTHORIZED\" = 2 ]; then exit 2; fi\nexit 0\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        StubReply { path, out }
    }

    /// The recorded environment, if the reply program ran.
    pub fn env(&self) -> Option<Vec<(String, String)>> {
        let text = std::fs::read_to_string(&self.out).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    pub fn var(&self, name: &str) -> Option<String> {
        self.env()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn reset(&self) {
        let _ = std::fs::remove_file(&self.out);
    }
}

/// The result of one checkpassword run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `checkpassword` as Dovecot does: `input` on fd 3, /dev/null on fd 0,
/// the stub reply program (with its output file as argument) appended.
pub fn checkpassword(config: &Path, input: &[u8], env: &[(&str, &str)], reply: &StubReply) -> Run {
    checkpassword_with(&mut Command::new("bash"), config, input, env, reply)
}

/// [`checkpassword`] with `cmd` as the `bash` to run (e.g. one run through `nsenter`).
pub fn checkpassword_with(
    cmd: &mut Command,
    config: &Path,
    input: &[u8],
    env: &[(&str, &str)],
    reply: &StubReply,
) -> Run {
    reply.reset();
    // bash moves our stdin (the pipe) to fd 3 and gives the helper /dev/null as fd 0.
    cmd.arg("-c")
        .arg("exec 3<&0 0</dev/null; exec \"$@\"")
        .arg("bash")
        .arg(bin())
        .arg("-c")
        .arg(config)
        .arg("checkpassword")
        .arg(&reply.path)
        .arg(&reply.out)
        .env_remove("MAILCOW_LDAP_AUTH_CONFIG")
        .env_remove("LDAPTLS_CACERT")
        .env("ORIG_UID", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        // The helper may exit before reading everything (oversize input): ignore EPIPE.
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A userdb lookup as Dovecot makes it: `AUTHORIZED=1`, an empty password.
pub fn lookup(config: &Path, user: &str, reply: &StubReply) -> Run {
    checkpassword(config, &creds(user, ""), &[("AUTHORIZED", "1")], reply)
}

/// `user\0password\0\0`, as Dovecot writes it.
pub fn creds(user: &str, password: &str) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(user.as_bytes());
    v.push(0);
    v.extend_from_slice(password.as_bytes());
    v.extend_from_slice(b"\0\0");
    v
}

/// Write a config file (mode 0600) and return its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Run an admin command of the binary with `stdin` as its input.
pub fn admin(config: &Path, args: &[&str], stdin: &str) -> Run {
    admin_with(Command::new(bin()), config, args, stdin)
}

/// [`admin`] with `cmd` as the binary to run (e.g. the binary run through `nsenter`).
pub fn admin_with(mut cmd: Command, config: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = cmd
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("LDAPTLS_CACERT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether the tests run as root (some checks need to chown files).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
