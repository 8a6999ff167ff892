//! A private OpenLDAP server: plain LDAP (with StartTLS) and LDAPS on loopback.

use super::{free_port, require, run_ok, wait_for_port, Pki};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BASE: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PW: &str = "adminpw";
pub const READER_DN: &str = "cn=reader,dc=example,dc=org";
pub const READER_PW: &str = "readerpw";

/// The test directory. Passwords are stored in clear text, which slapd accepts for simple binds.
pub const BASE_LDIF: &str = "\
dn: dc=example,dc=org
objectClass: top
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: cn=reader,dc=example,dc=org
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: reader
userPassword: readerpw

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=public,dc=example,dc=org
objectClass: organizationalUnit
ou: public

dn: uid=jdoe,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: extensibleObject
uid: jdoe
cn: John Doe
sn: Doe
displayName: John Doe
mail: jdoe@example.org
mail: john.doe@example.org
otherMailbox: staff
otherMailbox: default
userPassword: secret1

dn: uid=dup1,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dup1
cn: Dup One
sn: One
mail: dup@example.org
userPassword: duppw

dn: uid=dup2,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dup2
cn: Dup Two
sn: Two
mail: dup@example.org
userPassword: duppw

dn: cn=M\\C3\\BCller\\2C Hans+uid=hmueller,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: hmueller
cn: Müller, Hans
sn: Müller
mail: hans.mueller@example.org
userPassword:: cMOkc3N3w7ZyZOKCrA==

dn: uid=star,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: star
cn: Star
sn: Star
mail: star*@example.org
userPassword: starpw

dn: uid=anon,ou=public,dc=example,dc=org
objectClass: inetOrgPerson
uid: anon
cn: Anon
sn: Anon
mail: anon@example.org
userPassword: anonpw

dn: uid=nomail,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: extensibleObject
uid: nomail
cn: No Mail Attribute Value
sn: Nomail
mail: nomail@example.org
otherMailbox: unmapped
userPassword: nomailpw
";

/// The password of hmueller (non-ASCII), as stored base64 in [`BASE_LDIF`].
pub const HMUELLER_PW: &str = "pässwörd€";

/// Operations counted in slapd's stats log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ops {
    /// Binds with a user's DN.
    pub user: usize,
    /// Of those, refused with invalidCredentials (49).
    pub user_failed: usize,
    /// Binds of the service account (or the admin).
    pub service: usize,
    /// Searches and extended operations (StartTLS).
    pub other: usize,
}

impl Ops {
    /// Every operation, whoever made it.
    pub fn total(&self) -> usize {
        self.user + self.service + self.other
    }
}

/// What slapd's stats log shows one client connection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnOps {
    /// Binds as a user (any DN but the service account's and the admin's).
    pub user_binds: usize,
    /// Binds as the service account or the admin.
    pub service_binds: usize,
    pub searches: usize,
    /// slapd logged the connection's end.
    pub closed: bool,
}

pub struct Slapd {
    pub dir: PathBuf,
    pub port: u16,
    pub ldaps_port: u16,
    pub pki: Pki,
    child: Option<Child>,
    pub extra_conf: String,
    /// Lines for slapd.conf's global section (before the database).
    pub global_conf: String,
    /// slapd's `-d` level: 0, or 256 (`stats`: one line per operation in
    /// slapd.log, which [`Slapd::binds`] counts).
    debug: u32,
}

impl Slapd {
    /// Start with the base directory. `dir` must exist and outlive the server.
    pub fn start(dir: &Path) -> Slapd {
        Self::start_with(dir, BASE_LDIF, "")
    }

    /// Start with another directory content and extra slapd.conf lines
    /// (appended to the database section, e.g. `limits * size.soft=10`).
    pub fn start_with(dir: &Path, ldif: &str, extra_conf: &str) -> Slapd {
        Self::start_logged(dir, ldif, extra_conf, 0)
    }

    /// Start with the base directory, logging every operation (`-d stats`),
    /// so the test can count binds ([`Slapd::binds`]).
    pub fn start_counting(dir: &Path) -> Slapd {
        Self::start_logged(dir, BASE_LDIF, "", 256)
    }

    /// [`Slapd::start_counting`] with extra lines in slapd.conf's global
    /// section (e.g. `disallow bind_simple`).
    pub fn start_counting_global(dir: &Path, global_conf: &str) -> Slapd {
        Self::start_full(dir, BASE_LDIF, "", global_conf, 256)
    }

    fn start_logged(dir: &Path, ldif: &str, extra_conf: &str, debug: u32) -> Slapd {
        Self::start_full(dir, ldif, extra_conf, "", debug)
    }

    fn start_full(
        dir: &Path,
        ldif: &str,
        extra_conf: &str,
        global_conf: &str,
        debug: u32,
    ) -> Slapd {
        require("slapd", "slapd");
        require("slapadd", "slapd");
        let dir = dir.join("slapd");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let pki = Pki::create(&dir);
        let mut s = Slapd {
            dir,
            port: free_port(),
            ldaps_port: free_port(),
            pki,
            child: None,
            extra_conf: extra_conf.to_owned(),
            global_conf: global_conf.to_owned(),
            debug,
        };
        s.write_conf();
        std::fs::write(s.dir.join("data.ldif"), ldif).unwrap();
        run_ok(
            Command::new("slapadd")
                .arg("-f")
                .arg(s.conf())
                .arg("-l")
                .arg(s.dir.join("data.ldif")),
        );
        s.run();
        s
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slapd.conf")
    }

    fn write_conf(&self) {
        let d = self.dir.display();
        let text = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/misc.schema\n\
             pidfile {d}/slapd.pid\n\
             argsfile {d}/slapd.args\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             TLSCACertificateFile {ca}\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             {global}\n\
             database mdb\n\
             maxsize 104857600\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PW}\n\
             directory {d}/db\n\
             index objectClass eq\n\
             index mail,uid eq\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to dn.subtree=\"ou=public,{BASE}\" by * read\n\
             access to dn.base=\"{BASE}\" by * read\n\
             access to * by users read by anonymous auth by * none\n\
             {extra}\n",
            ca = self.pki.ca.display(),
            cert = self.pki.cert.display(),
            key = self.pki.key.display(),
            extra = self.extra_conf,
            global = self.global_conf,
        );
        std::fs::write(self.conf(), text).unwrap();
    }

    /// Start the server process (again) on the same ports and data.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "slapd already running");
        let urls = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
            self.port, self.ldaps_port
        );
        let child = Command::new("slapd")
            .arg("-f")
            .arg(self.conf())
            .arg("-h")
            .arg(&urls)
            .arg("-d")
            .arg(self.debug.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join("slapd.log")).unwrap(),
            ))
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10), "slapd");
        wait_for_port(self.ldaps_port, Duration::from_secs(10), "slapd (ldaps)");
    }

    /// Stop the server by its pid and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Operations logged so far (with [`Slapd::start_counting`]): binds with
    /// any DN but the service account's and the admin's, and all operations.
    ///
    /// slapd logs a bind's RESULT line after it has sent the result, so a client
    /// that has its answer can read the log before the line is there (seen in a
    /// full run: a failed bind counted as a bind without its failure). This
    /// waits, up to 10 s, until every bind logged has its RESULT line.
    pub fn binds(&self) -> Ops {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default();
            if Self::every_bind_has_its_result(&log) || std::time::Instant::now() >= deadline {
                return Self::count_binds(&log);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Whether each "BIND dn=... method=" line of `log` has its "RESULT tag=97" line.
    fn every_bind_has_its_result(log: &str) -> bool {
        let key = |line: &str| -> Option<String> {
            let i = line.find("conn=")?;
            Some(
                line[i..]
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        };
        let mut open = std::collections::HashSet::new();
        for line in log.lines() {
            if line.contains(" BIND dn=\"") && line.contains(" method=") {
                open.extend(key(line));
            } else if line.contains(" RESULT tag=97 ") {
                if let Some(k) = key(line) {
                    open.remove(&k);
                }
            }
        }
        open.is_empty()
    }

    fn count_binds(log: &str) -> Ops {
        let mut ops = Ops::default();
        let mut user_binds = std::collections::HashSet::new();
        // "... conn=1001 op=1 BIND dn=..." / "... conn=1001 op=1 RESULT tag=97 err=49 ..."
        let conn_op = |line: &str| -> String {
            let i = line.find("conn=").unwrap_or(0);
            line[i..]
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        };
        for line in log.lines() {
            // One "BIND dn=... method=128" line per bind (a successful one
            // adds a "BIND dn=... mech=SIMPLE" line, not counted).
            let Some(pos) = line
                .find(" BIND dn=\"")
                .filter(|_| line.contains(" method="))
            else {
                if line.contains(" SRCH base=") || line.contains(" EXT oid=") {
                    ops.other += 1;
                }
                continue;
            };
            let dn = line[pos + " BIND dn=\"".len()..]
                .split('"')
                .next()
                .unwrap_or("");
            if dn.eq_ignore_ascii_case(READER_DN) || dn.eq_ignore_ascii_case(ADMIN_DN) {
                ops.service += 1;
            } else {
                ops.user += 1;
                user_binds.insert(conn_op(line));
            }
        }
        for line in log.lines() {
            if line.contains(" RESULT tag=97 err=49") && user_binds.contains(&conn_op(line)) {
                ops.user_failed += 1;
            }
        }
        ops
    }

    /// Every client connection slapd logged so far (with
    /// [`Slapd::start_counting`]), by its `conn=` number, with what it did.
    pub fn connections(&self) -> std::collections::BTreeMap<u64, ConnOps> {
        let log = std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default();
        let mut conns: std::collections::BTreeMap<u64, ConnOps> = Default::default();
        for line in log.lines() {
            let Some(i) = line.find(" conn=") else {
                continue;
            };
            let rest = &line[i + " conn=".len()..];
            let Some(id) = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let c = conns.entry(id).or_default();
            if let Some(pos) = line
                .find(" BIND dn=\"")
                .filter(|_| line.contains(" method="))
            {
                let dn = line[pos + " BIND dn=\"".len()..]
                    .split('"')
                    .next()
                    .unwrap_or("");
                if dn.eq_ignore_ascii_case(READER_DN) || dn.eq_ignore_ascii_case(ADMIN_DN) {
                    c.service_binds += 1;
                } else {
                    c.user_binds += 1;
                }
            } else if line.contains(" SRCH base=") {
                c.searches += 1;
            } else if line.contains(" closed") {
                c.closed = true;
            }
        }
        conns
    }

    /// The user DNs bound so far, in order, each with its result code.
    pub fn user_bind_results(&self) -> Vec<(String, u32)> {
        let log = std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default();
        let mut pending: std::collections::HashMap<String, String> = Default::default();
        let mut out = Vec::new();
        for line in log.lines() {
            let Some(i) = line.find(" conn=") else {
                continue;
            };
            let key: String = line[i..]
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(pos) = line
                .find(" BIND dn=\"")
                .filter(|_| line.contains(" method="))
            {
                let dn = line[pos + " BIND dn=\"".len()..]
                    .split('"')
                    .next()
                    .unwrap_or("");
                if !dn.eq_ignore_ascii_case(READER_DN) && !dn.eq_ignore_ascii_case(ADMIN_DN) {
                    pending.insert(key, dn.to_owned());
                }
            } else if let Some(pos) = line.find(" RESULT tag=97 err=") {
                if let Some(dn) = pending.remove(&key) {
                    let code = line[pos + " RESULT tag=97 err=".len()..]
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(u32::MAX);
                    out.push((dn, code));
                }
            }
        }
        out
    }

    /// Searches logged so far whose filter contains `what`.
    pub fn searches_for(&self, what: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(" SRCH ") && l.contains("filter=") && l.contains(what))
            .count()
    }

    /// Add entries (LDIF) through the admin account.
    pub fn add(&self, ldif: &str) {
        self.ldap_tool("ldapadd", ldif);
    }

    /// Apply an LDIF of changes (changetype: modify / delete) through the admin account.
    pub fn modify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", ldif);
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) {
        let f = self.dir.join(format!("{tool}-{}.ldif", super::free_port()));
        std::fs::write(&f, ldif).unwrap();
        run_ok(
            Command::new(tool)
                .args(["-x", "-H", &format!("ldap://127.0.0.1:{}", self.port)])
                .args(["-D", ADMIN_DN, "-w", ADMIN_PW, "-f"])
                .arg(&f),
        );
    }

    /// A config `[ldap]` section for this server (plain LDAP, service bind).
    pub fn ldap_section(&self) -> String {
        format!(
            "[ldap]\nhosts = \"127.0.0.1:{}\"\nbase_dn = \"{BASE}\"\nbind_dn = \"{READER_DN}\"\n\
             bind_password = \"{READER_PW}\"\nconnect_timeout_ms = 1000\ntimeout_ms = 2000\n",
            self.port
        )
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
