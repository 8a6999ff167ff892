//! The mailcow route as an admin follows it: `contrib/mailcow/install.sh` run
//! in a folder laid out like mailcow-dockerized (a git checkout whose
//! `data/conf/dovecot/dovecot.conf` is tracked), then Debian's Dovecot on the
//! files it wrote, with `data/conf/dovecot` bind-mounted at `/etc/dovecot` in a
//! private mount namespace (as mailcow's Dovecot container mounts it) and its
//! `auth` process running as `dovecot` (as in mailcow's container: its
//! `service auth` names no user). serve runs as uid 10001, the image's user,
//! on the files the script wrote.
//!
//! Then mailcow's `update.sh` (mailcow-dockerized, `update.sh`): its conflict path
//! (`git add -A`, which must not pick up our secrets) and its reset
//! (`git checkout -f`, which drops the include line from the tracked
//! dovecot.conf), followed by the next container start, where mailcow's
//! entrypoint runs every executable in `data/hooks/dovecot/`
//! (`data/Dockerfiles/dovecot/docker-entrypoint.sh`, "Run hooks"): logins
//! through serve must work again.

use crate::provision::Env;
use crate::serve_e2e::{mailcow_lua_stand_in, MailcowEndpoint, LOCAL_PW, LOCAL_USER};
use crate::support::clients::{imap_login, Conn};
use crate::support::dovecot::{helper_binary, Dovecot, MAIL_GID, MAIL_UID};
use crate::support::mariadb::{PASSWORD as DB_PASSWORD, USER as DB_USER};
use crate::support::serve::Serve;
use crate::support::slapd::{BASE, READER_DN, READER_PW};
use crate::support::{free_port, run_ok};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USER: &str = "jdoe@example.org";
const PASSWORD: &str = "secret1";
/// The image's user (packaging/Dockerfile).
const IMAGE_UID: u32 = 10001;
const INCLUDE: &str = "!include_try /etc/dovecot/mailcow-ldap-auth/passdb.conf";

/// The part of mailcow's `data/conf/dovecot/dovecot.conf` that matters here:
/// its three passdbs in its order, the comment lines above them, and the
/// `extra.conf` include at the end. (The listeners, paths and test settings
/// come from the fixture's own dovecot.conf, which includes this one.)
const MAILCOW_DOVECOT_CONF: &str = "\
# --------------------------------------------------------------------------
# Please create a file \"extra.conf\" for persistent overrides to dovecot.conf
# --------------------------------------------------------------------------
auth_master_user_separator = *
passdb {
  driver = lua
  args = file=/etc/dovecot/auth/passwd-verify.lua blocking=yes cache_key=%s:%u:%w
  result_success = return-ok
  result_failure = continue
  result_internalfail = continue
}
# try a master passwd
passdb {
  driver = passwd-file
  args = /etc/dovecot/dovecot-master.passwd
  master = yes
  skip = authenticated
}
# check for regular password - if empty (e.g. force-passwd-reset), previous pass=yes passdbs also fail
# a return of the following passdb is mandatory
passdb {
  driver = lua
  args = file=/etc/dovecot/auth/passwd-verify.lua blocking=yes
}
!include_try /etc/dovecot/extra.conf
";

/// Lines of mailcow's `.gitignore` for the files this route touches.
const MAILCOW_GITIGNORE: &str = "\
data/conf/dovecot/dovecot-master.passwd
data/conf/dovecot/extra.conf
data/hooks/dovecot/*
docker-compose.override.yml
mailcow.conf
";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=moo", "-c", "user.email=moo@cow.moo"])
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(p: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A mailcow-dockerized checkout: mailcow.conf as generate_config.sh writes it,
/// the tracked dovecot.conf and passwd-verify.lua (a stand-in asking `endpoint`).
pub(crate) fn mailcow_folder(root: &Path, db_name: &str, endpoint_port: u16) -> PathBuf {
    let m = root.join("mailcow-dockerized");
    std::fs::create_dir_all(&m).unwrap();
    git(&m, &["init", "-q", "-b", "master"]);
    write(&m.join(".gitignore"), MAILCOW_GITIGNORE, 0o644);
    write(&m.join("docker-compose.yml"), "services: {}\n", 0o644);
    write(
        &m.join("data/conf/dovecot/dovecot.conf"),
        MAILCOW_DOVECOT_CONF,
        0o644,
    );
    write(
        &m.join("data/conf/dovecot/auth/passwd-verify.lua"),
        &mailcow_lua_stand_in(endpoint_port),
        0o644,
    );
    write(&m.join("data/hooks/dovecot/.gitkeep"), "", 0o644);
    // SOGo's single sign-on folder, tracked as mailcow ships it (mounted by the
    // override file at /etc/sogo-sso; mailcow's Dovecot writes sogo-sso.pass into it).
    write(&m.join("data/conf/phpfpm/sogo-sso/.gitkeep"), "", 0o644);
    git(&m, &["add", "-A"]);
    git(&m, &["commit", "-q", "-m", "mailcow as shipped"]);
    // Untracked, as on a server: generate_config.sh's output and the master passdb.
    write(
        &m.join("mailcow.conf"),
        &format!("MAILCOW_HOSTNAME=mail.example.org\nDBNAME={db_name}\nDBUSER={DB_USER}\nDBPASS={DB_PASSWORD}\nREDIS_PORT=127.0.0.1:7654\nIPV4_NETWORK=172.22.9\n"),
        0o600,
    );
    write(
        &m.join("data/conf/dovecot/dovecot-master.passwd"),
        "",
        0o644,
    );
    m
}

fn install(mailcow: &Path) -> Output {
    install_with(mailcow, &[])
}

pub(crate) fn install_with(mailcow: &Path, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/mailcow/install.sh");
    Command::new("sh")
        .arg(script)
        .args(args)
        .current_dir(mailcow)
        .output()
        .expect("run install.sh")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file below `dir` (but .git) with its content, mode and owner.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if p.file_name().unwrap() == ".git" {
                continue;
            }
            if meta.is_dir() {
                todo.push(p.clone());
                out.push((p, Vec::new(), meta.mode(), meta.uid()));
            } else {
                out.push((
                    p.clone(),
                    std::fs::read(&p).unwrap(),
                    meta.mode(),
                    meta.uid(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// What mailcow's entrypoint does at each start: run every executable hook.
fn run_hooks(mailcow: &Path) -> String {
    let mut log = String::new();
    let mut hooks: Vec<_> = std::fs::read_dir(mailcow.join("data/hooks/dovecot"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    hooks.sort();
    for h in hooks {
        if std::fs::metadata(&h).unwrap().permissions().mode() & 0o111 == 0 {
            continue;
        }
        // In the container, data/conf/dovecot is /etc/dovecot: the same mount here.
        let out = run_ok(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
                .arg("mount --bind \"$1\" /etc/dovecot; exec \"$2\"")
                .arg("sh")
                .arg(mailcow.join("data/conf/dovecot"))
                .arg(&h),
        );
        log.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    log
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn mailcow_install_script_then_update_sh_then_next_start() {
    let e = Env::new();
    // mailcow's UI: the LDAP identity provider with login provisioning.
    e.db.sql(&format!(
        "INSERT INTO identity_provider (`key`, `value`) VALUES ('authsource', 'ldap'), ('host', '127.0.0.1'), \
         ('port', '{}'), ('basedn', '{BASE}'), ('username_field', 'mail'), ('filter', ''), \
         ('attribute_field', 'othermailbox'), ('binddn', '{READER_DN}'), ('bindpass', '{READER_PW}'), \
         ('use_ssl', ''), ('use_tls', ''), ('ignore_ssl_error', ''), ('mappers', '[\"default\"]'), \
         ('templates', '[\"Staff\"]'), ('login_provisioning', '1'), ('import_users', '0'), \
         ('periodic_sync', '0'), ('sync_interval', '15')",
        e.slapd.port
    ));
    // A mailbox whose password mailcow keeps (authsource mailcow): with the
    // database, serve verifies its SQL hash itself (passdb = "full").
    e.db.sql(&format!(
        "INSERT INTO mailbox (username, password, name, local_part, domain, attributes, authsource, active) \
         VALUES ('{LOCAL_USER}', '{{PLAIN}}{LOCAL_PW}', 'L', 'local', 'example.org', '{{}}', 'mailcow', 1)"
    ));
    let root = e.path().to_owned();
    // Traversable for dovecot and uid 10001, as /opt is on a server.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let endpoint = MailcowEndpoint::start();
    let m = mailcow_folder(&root, &e.db.name, endpoint.port);

    // --- The script, twice: the second run changes nothing.
    let first = install(&m);
    assert!(first.status.success(), "install.sh: {}", text(&first));
    let conf = std::fs::read_to_string(m.join("data/conf/dovecot/dovecot.conf")).unwrap();
    let first_passdb = conf.find("passdb {").unwrap();
    assert_eq!(
        conf.find(INCLUDE),
        Some(first_passdb - INCLUDE.len() - 1),
        "the include line should stand just before mailcow's first passdb:\n{conf}"
    );
    let before = snapshot(&m);
    let second = install(&m);
    assert!(
        second.status.success(),
        "install.sh again: {}",
        text(&second)
    );
    assert!(
        !text(&second).contains("created") && !text(&second).contains("appended"),
        "a second run should find everything in place: {}",
        text(&second)
    );
    assert!(before == snapshot(&m), "a second run changed files");
    assert_eq!(
        conf.matches(INCLUDE).count(),
        1,
        "one include line, whatever the number of runs"
    );
    let dc_dir = m.join("data/conf/dovecot/mailcow-ldap-auth");
    assert_eq!(
        mode_of(&dc_dir),
        0o755,
        "Dovecot's auth (user dovecot) must traverse it"
    );
    for f in [
        "data/conf/mailcow-ldap-auth/db-password",
        "data/conf/dovecot/mailcow-ldap-auth/http-secret",
    ] {
        let meta = std::fs::metadata(m.join(f)).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (IMAGE_UID, 0o600), "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(m.join("data/conf/mailcow-ldap-auth/db-password")).unwrap(),
        format!("{DB_PASSWORD}\n")
    );
    let override_file = std::fs::read_to_string(m.join("docker-compose.override.yml")).unwrap();
    assert!(
        override_file.contains("pull_policy: never"),
        "{override_file}"
    );

    // --- serve, as uid 10001, on the files the script wrote. Only what a
    // container network gives is moved: the database's address, the listener, and
    // the paths of the two mounted folders.
    let serve_dir = root.join("serve");
    std::fs::create_dir_all(&serve_dir).unwrap();
    std::os::unix::fs::chown(&serve_dir, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    let generated = m.join("data/conf/mailcow-ldap-auth/serve.toml");
    let port = free_port();
    let socket = serve_dir.join("mux");
    let cfg_text = std::fs::read_to_string(&generated).unwrap();
    assert!(
        cfg_text.contains(&format!("name = \"{}\"", e.db.name)),
        "DBNAME: {cfg_text}"
    );
    let mut cfg_text = cfg_text
        .replace(
            "\"/run/mailcow-ldap-auth\"",
            &format!("\"{}\"", serve_dir.display()),
        )
        .replace("host = \"mysql\"", "host = \"127.0.0.1\"")
        .replace("port = 3306", &format!("port = {}", e.db.server.port))
        .replace("[::]:9083", &format!("127.0.0.1:{port}"))
        // The mail user and homes of this machine's Dovecot, not mailcow's vmail.
        .replace("uid = \"5000\"", &format!("uid = \"{MAIL_UID}\""))
        .replace("gid = \"5000\"", &format!("gid = \"{MAIL_GID}\""))
        .replace(
            "\"/var/vmail/",
            &format!("\"{}/dovecot/mail/", root.display()),
        )
        .replace(
            "/etc/mailcow-ldap-auth/",
            &format!("{}/", m.join("data/conf/mailcow-ldap-auth").display()),
        )
        .replace(
            "/etc/dovecot/mailcow-ldap-auth/",
            &format!("{}/", dc_dir.display()),
        );
    cfg_text.push_str(&format!("saslauthd_socket = \"{}\"\n", socket.display()));
    let cfg = serve_dir.join("serve.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let meta = std::fs::metadata(&generated).unwrap();
    std::os::unix::fs::chown(&cfg, Some(meta.uid()), Some(meta.gid())).unwrap();
    std::fs::set_permissions(&cfg, meta.permissions()).unwrap();
    let binary = helper_binary(&serve_dir);
    let serve = Serve::start_as(&binary, (IMAGE_UID, IMAGE_UID), &cfg, port, socket);

    // Where Dovecot finds serve: extra.conf's URL, moved to this test's port.
    let extra_path = m.join("data/conf/dovecot/extra.conf");
    let extra = std::fs::read_to_string(&extra_path).unwrap();
    assert!(extra.contains("http://ldap-auth-mailcow:9083"), "{extra}");
    std::fs::write(
        &extra_path,
        extra.replace(
            "http://ldap-auth-mailcow:9083",
            &format!("http://127.0.0.1:{port}"),
        ),
    )
    .unwrap();

    // --- Dovecot with mailcow's folder at /etc/dovecot.
    let auth = format!(
        "!include /etc/dovecot/dovecot.conf\n\
         userdb {{\n  driver = static\n  args = uid={MAIL_UID} gid={MAIL_GID} home={}/dovecot/mail/%d/%n\n}}\n",
        root.display()
    );
    let mounts = vec![(m.join("data/conf/dovecot"), PathBuf::from("/etc/dovecot"))];
    let mut dovecot = Dovecot::start_mounted(&root, "", |_| auth.clone(), mounts.clone());
    let login = |d: &Dovecot, what: &str| {
        let asked = endpoint.count();
        let r = imap_login(d.imap_port, USER, PASSWORD);
        assert!(r.starts_with("OK"), "{what}: LDAP login: {r}\n{}", d.log());
        assert_eq!(
            endpoint.count(),
            asked,
            "{what}: mailcow's passdb was asked: serve is not first"
        );
        let r = imap_login(d.imap_port, LOCAL_USER, LOCAL_PW);
        assert!(
            r.starts_with("OK"),
            "{what}: mailcow's own mailbox: {r}\n{}",
            d.log()
        );
    };
    login(&dovecot, "after install.sh");
    assert!(
        !dovecot.log().contains("Permission denied"),
        "{}",
        dovecot.log()
    );
    // Provisioned by serve from the UI's mapping.
    assert_eq!(
        e.db.value(&format!(
            "SELECT authsource FROM mailbox WHERE username = '{USER}'"
        )),
        "ldap"
    );

    // The folder mode the old README gave (0750, root): Dovecot's auth process,
    // user dovecot, cannot load the script, and no login works at all. The script
    // puts it right.
    dovecot.stop();
    std::fs::set_permissions(&dc_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    dovecot.run();
    let greeting = Conn::open("imap", dovecot.imap_port).line();
    assert_eq!(
        greeting, "* BYE Auth process broken",
        "a 0750 folder should stop Dovecot's auth, for every user"
    );
    assert!(
        dovecot.log().contains("missing +x perm"),
        "Dovecot should say why: {}",
        dovecot.log()
    );
    dovecot.stop();
    let repair = install(&m);
    assert!(repair.status.success(), "{}", text(&repair));
    assert_eq!(mode_of(&dc_dir), 0o755);

    // --- update.sh. Its conflict path commits everything `git add -A` sees:
    // nothing of ours may be among it.
    let added = git(&m, &["add", "-A", "--dry-run"]);
    assert!(
        added
            .lines()
            .all(|l| l.contains("data/conf/dovecot/dovecot.conf")),
        "update.sh's `git add -A` would commit: {added}"
    );
    // Its reset: tracked files as committed, the include line gone.
    git(&m, &["checkout", "-f", "master"]);
    let conf = std::fs::read_to_string(m.join("data/conf/dovecot/dovecot.conf")).unwrap();
    assert!(
        !conf.contains(INCLUDE),
        "git checkout -f should have dropped the line"
    );
    // The next start of mailcow's Dovecot container: hooks, then Dovecot.
    let hooks = run_hooks(&m);
    assert!(hooks.contains("included serve's passdb"), "{hooks}");
    dovecot.run();
    login(&dovecot, "after update.sh's reset and the next start");
    let again = run_hooks(&m);
    assert!(again.contains("is included"), "{again}");
    drop(serve);
}

#[test]
fn mailcow_install_script_never_overwrites_an_admins_files() {
    let dir = tempfile::TempDir::new().unwrap();
    let m = mailcow_folder(dir.path(), "mailcow", 1);
    let admin_override = "services:\n  my-own:\n    image: example\n";
    write(
        &m.join("docker-compose.override.yml"),
        admin_override,
        0o644,
    );
    let admin_serve = "# the admin's own\n";
    write(
        &m.join("data/conf/mailcow-ldap-auth/serve.toml"),
        admin_serve,
        0o600,
    );
    write(
        &m.join("data/conf/dovecot/extra.conf"),
        "import_environment = TZ\n",
        0o644,
    );
    let out = install(&m);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("merge the service"), "{t}");
    assert!(t.contains("serve.toml differs"), "{t}");
    assert_eq!(
        std::fs::read_to_string(m.join("docker-compose.override.yml")).unwrap(),
        admin_override
    );
    assert_eq!(
        std::fs::read_to_string(m.join("data/conf/mailcow-ldap-auth/serve.toml")).unwrap(),
        admin_serve
    );
    // extra.conf: the admin's line kept, ours after it.
    let extra = std::fs::read_to_string(m.join("data/conf/dovecot/extra.conf")).unwrap();
    assert!(extra.starts_with("import_environment = TZ\n"), "{extra}");
    assert!(
        extra.contains("$import_environment MAILCOW_LDAP_AUTH_URL="),
        "{extra}"
    );

    // The first version's service, with single-file mounts: named, not changed.
    let old_service =
        "services:\n  ldap-auth-mailcow:\n    image: mailcow-ldap-auth:0.1.0\n    volumes:\n      \
         - ./data/conf/mailcow-ldap-auth/serve.toml:/etc/mailcow-ldap-auth/config.toml:ro,z\n";
    write(&m.join("docker-compose.override.yml"), old_service, 0o644);
    let out = install(&m);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("the old ldap-auth-mailcow service"), "{t}");
    assert_eq!(
        std::fs::read_to_string(m.join("docker-compose.override.yml")).unwrap(),
        old_service
    );

    // Outside a mailcow folder: refused, nothing written.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = install(&elsewhere);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// `install.sh sync`: the sync's configuration with mailcow's Redis as its
/// containers reach it, and nothing of Dovecot; `serve sync`: both services.
#[test]
fn mailcow_install_script_sync_route() {
    let dir = tempfile::TempDir::new().unwrap();
    let m = mailcow_folder(dir.path(), "mailcow", 1);
    let conf = m.join("mailcow.conf");
    let mut mc = std::fs::read_to_string(&conf).unwrap();
    mc.push_str("REDISPASS=Rp4ss\n");
    std::fs::write(&conf, &mc).unwrap();
    let out = install_with(&m, &["sync"]);
    assert!(out.status.success(), "{}", text(&out));
    let sync = std::fs::read_to_string(m.join("data/conf/mailcow-ldap-auth/sync.toml")).unwrap();
    // REDIS_PORT (127.0.0.1:7654, the host's binding) is not what a container uses.
    assert!(
        sync.contains("redis_url = \"redis://:Rp4ss@redis-mailcow:6379/0\""),
        "{sync}"
    );
    assert!(sync.contains("name = \"mailcow\""), "{sync}");
    assert!(!m.join("data/conf/mailcow-ldap-auth/serve.toml").exists());
    assert_eq!(
        std::fs::read_to_string(m.join("data/conf/dovecot/dovecot.conf")).unwrap(),
        MAILCOW_DOVECOT_CONF,
        "the sync route leaves mailcow's Dovecot alone"
    );
    assert!(!m.join("data/conf/dovecot/extra.conf").exists());
    assert!(!m.join("data/hooks/dovecot/mailcow-ldap-auth.sh").exists());
    let o = std::fs::read_to_string(m.join("docker-compose.override.yml")).unwrap();
    assert!(
        o.contains("\n  ldap-sync-mailcow:\n") && !o.contains("ldap-auth-mailcow:"),
        "{o}"
    );
    assert!(o.contains("pull_policy: never"), "{o}");

    // A replica setup: mailcow's PHP writes to REDIS_SLAVEOF_IP:REDIS_SLAVEOF_PORT.
    let m2 = mailcow_folder(&dir.path().join("two"), "mailcow", 1);
    let conf = m2.join("mailcow.conf");
    let mut mc = std::fs::read_to_string(&conf).unwrap();
    mc.push_str("REDISPASS=Rp4ss\nREDIS_SLAVEOF_IP=192.0.2.10\nREDIS_SLAVEOF_PORT=6380\n");
    std::fs::write(&conf, &mc).unwrap();
    let out = install_with(&m2, &["serve", "sync"]);
    assert!(out.status.success(), "{}", text(&out));
    let sync = std::fs::read_to_string(m2.join("data/conf/mailcow-ldap-auth/sync.toml")).unwrap();
    assert!(sync.contains("redis://:Rp4ss@192.0.2.10:6380/0"), "{sync}");
    let o = std::fs::read_to_string(m2.join("docker-compose.override.yml")).unwrap();
    assert_eq!(o.matches("\nservices:\n").count(), 1, "{o}");
    assert!(
        o.contains("\n  ldap-sync-mailcow:\n") && o.contains("\n  ldap-auth-mailcow:\n"),
        "{o}"
    );
    let again = install_with(&m2, &["serve", "sync"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(!text(&again).contains("created"), "{}", text(&again));
}

/// The first shipped passdb.conf (`result_failure = continue`: serve's
/// refusals went on to mailcow's PHP, which bound to LDAP again, twice).
const FIRST_PASSDB_CONF: &str = r#"# mailcow-ldap-auth serve as the FIRST passdb of mailcow's Dovecot (Dovecot 2.3).
# Goes to data/conf/dovecot/mailcow-ldap-auth/passdb.conf in the mailcow-dockerized
# folder (in the container: /etc/dovecot/mailcow-ldap-auth/passdb.conf) and is
# included *before* mailcow's first `passdb {` block; see README.md, step 4.
#
#   LDAP password of a mailbox with authsource "ldap" (or a first login, with
#   login provisioning on)  -> serve: 200 -> login, mailcow's passdbs are not asked
#   anything else (mailcow mailboxes, app passwords, wrong passwords)
#                           -> serve: 401 -> mailcow's passdbs decide, as before
#   LDAP or the database unreachable
#                           -> serve: 503 -> mailcow's passdbs still decide; if they
#                              refuse too, Dovecot answers "temporary failure"
#                              (IMAP NO [UNAVAILABLE]), not "wrong password"
passdb {
  driver = lua
  # cache_key as mailcow's own Lua passdb: service, user and password (mailcow's
  # auth cache is on). On a temporary failure a cached entry stays usable.
  args = file=/etc/dovecot/mailcow-ldap-auth/mailcow-ldap-auth.lua blocking=yes cache_key=%s:%u:%w
  result_success = return-ok
  result_failure = continue
  result_internalfail = continue
}
"#;

/// An install of the first chain is brought to the current one: the earlier
/// shipped passdb.conf replaced (a changed one is kept and named), serve's
/// extra.conf line given MAILCOW_LDAP_AUTH_NOT_OURS=next, and a new serve.toml
/// gets SOGo's address from mailcow.conf's IPV4_NETWORK.
#[test]
fn mailcow_install_script_upgrades_the_first_chain() {
    let dir = tempfile::TempDir::new().unwrap();
    let m = mailcow_folder(dir.path(), "mailcow", 1);
    let passdb = m.join("data/conf/dovecot/mailcow-ldap-auth/passdb.conf");
    write(&passdb, FIRST_PASSDB_CONF, 0o644);
    let first_line = "import_environment = $import_environment MAILCOW_LDAP_AUTH_URL=http://ldap-auth-mailcow:9083 \
         MAILCOW_LDAP_AUTH_SECRET_FILE=/etc/dovecot/mailcow-ldap-auth/http-secret MAILCOW_LDAP_AUTH_TIMEOUT_MSECS=10000\n";
    write(&m.join("data/conf/dovecot/extra.conf"), first_line, 0o644);
    let out = install(&m);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("an earlier shipped version"), "{t}");
    assert_eq!(
        std::fs::read_to_string(&passdb).unwrap(),
        crate::support::clients::contrib("mailcow/dovecot/mailcow-ldap-auth-passdb.conf")
    );
    let extra = std::fs::read_to_string(m.join("data/conf/dovecot/extra.conf")).unwrap();
    assert_eq!(
        extra,
        first_line.replace("\n", " MAILCOW_LDAP_AUTH_NOT_OURS=next\n"),
        "{t}"
    );
    let serve = std::fs::read_to_string(m.join("data/conf/mailcow-ldap-auth/serve.toml")).unwrap();
    assert!(serve.contains("sogo_address = \"172.22.9.248\""), "{serve}");
    // SOGo's single sign-on secret, where mailcow's PHP reads it too.
    assert!(
        serve.contains("sogo_sso_file = \"/etc/sogo-sso/sogo-sso.pass\""),
        "{serve}"
    );
    let o = std::fs::read_to_string(m.join("docker-compose.override.yml")).unwrap();
    assert!(
        o.contains("- ./data/conf/phpfpm/sogo-sso:/etc/sogo-sso:ro,z"),
        "{o}"
    );
    // Again: nothing to do.
    let again = install(&m);
    assert!(
        again.status.success() && !text(&again).contains("replacing"),
        "{}",
        text(&again)
    );
    assert_eq!(
        std::fs::read_to_string(m.join("data/conf/dovecot/extra.conf")).unwrap(),
        extra
    );

    // A passdb.conf the admin changed is kept, and named.
    write(
        &passdb,
        &FIRST_PASSDB_CONF.replace("return-ok", "return-ok\n  # mine"),
        0o644,
    );
    let out = install(&m);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("passdb.conf differs"), "{}", text(&out));
}
