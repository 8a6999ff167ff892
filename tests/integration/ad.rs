//! Active Directory: the binary against a real Samba AD DC (see
//! `support::samba`), as most admins connect mailcow to a directory.

use crate::support::samba::{SambaDc, ALICE, BASE, HOST};
use crate::support::{write_config, StubReply};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The login filter of the README's Active Directory section: sAMAccountName,
/// userPrincipalName or mail, enabled accounts only.
pub const AD_FILTER: &str = "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2))(|(sAMAccountName=%u)(userPrincipalName=%u)(mail=%u)))";

struct Env {
    dir: TempDir,
    dc: SambaDc,
    reply: StubReply,
}

impl Env {
    fn new() -> Env {
        let dir = TempDir::new().unwrap();
        let dc = SambaDc::start(dir.path());
        let reply = StubReply::create(dir.path());
        Env { dir, dc, reply }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A config with the DC's `[ldap]` section plus `extra` lines in it.
    fn config(&self, ldap_extra: &str, rest: &str) -> PathBuf {
        let text = format!(
            "state_dir = \"{}\"\n{}username_field = \"sAMAccountName\"\nfilter = \"{AD_FILTER}\"\n{ldap_extra}\n{rest}",
            self.path().display(),
            self.dc.ldap_section(),
        );
        write_config(self.path(), "config.toml", &text)
    }
}

#[test]
fn samba_dc_fixture_answers_over_ldaps() {
    let env = Env::new();
    // libldap's client (what mailcow's PHP uses) over LDAPS with Samba's CA.
    let mail = env
        .dc
        .read_attr(&format!("(sAMAccountName={})", ALICE.sam), "mail");
    assert_eq!(mail, [ALICE.mail]);
    let cfg = env.config("ignore_ssl_errors = true\n", "");
    let r = env.dc.login(&cfg, ALICE.sam, ALICE.password, &env.reply);
    assert_eq!(r.code, 0, "{r:?}");
    let r = env.dc.login(&cfg, ALICE.sam, "wrong", &env.reply);
    assert_eq!(r.code, 1, "{r:?}");
    let _ = (BASE, HOST);
}
