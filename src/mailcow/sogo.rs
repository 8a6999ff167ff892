//! `_sogo_static_view`: the table SOGo reads its users from (a table in
//! mailcow, not a view: init_db.inc.php), one row per active mailbox.

use super::error::StoreError;
use super::row;
use mysql::params;
use mysql::prelude::Queryable;

/// SOGo's rows of these mailboxes, made as mailcow's
/// `update_sogo_static_view($mailbox)` (functions.inc.php) makes them: from
/// the mailbox, its aliases (mailcow's `grouped_mail_aliases`: the active,
/// SOGo-visible aliases of each `goto` list naming the mailbox), its alias
/// domains' addresses (`grouped_domain_alias_address`) and external sender
/// ACLs (`grouped_sender_acl_external`) — the views' definitions from
/// init_db.inc.php, asked for these mailboxes only and with plain reads,
/// so no other mailbox's row is read or locked (mailcow's INSERT ... SELECT
/// over the views locks every mailbox it scans), and the alias table read
/// once for all of them. A `goto` list names a mailbox when one of its
/// addresses is the mailbox's, ignoring case (mailcow's REGEXP, without
/// reading the address's dots as "any character"). Written when the
/// mailbox is active 1, removed when it is not (0, or 2 "disallow login").
/// Inside the caller's transaction, so SOGo never sees a mailbox change
/// without its row. `c_password` is a salted SHA-256 of random bytes,
/// never used to log in (mailcow means the same but, its variables being
/// undefined there, writes the hash of the empty password).
pub(super) fn refresh<Q: Queryable>(q: &mut Q, usernames: &[&str]) -> Result<(), StoreError> {
    if usernames.is_empty() {
        return Ok(());
    }
    let likes = vec!["goto LIKE CONCAT('%', ?, '%')"; usernames.len()].join(" OR ");
    let groups = row::all(
        q,
        "alias",
        &format!(
            "SELECT goto, GROUP_CONCAT(address ORDER BY address SEPARATOR ' ') FROM alias \
             WHERE address != goto AND active = '1' AND sogo_visible = '1' AND address NOT LIKE '@%' \
             AND ({likes}) GROUP BY goto"
        ),
        usernames.to_vec(),
    )?
    .into_iter()
    .map(|mut r| Ok((r.next::<String>("goto")?, r.next::<String>("address")?)))
    .collect::<Result<Vec<_>, StoreError>>()?;
    for username in usernames {
        let me = username.to_lowercase();
        let mut mine: Vec<&str> = groups
            .iter()
            .filter(|(goto, _)| goto.split(',').any(|a| a.trim().to_lowercase() == me))
            .map(|(_, aliases)| aliases.as_str())
            .collect();
        mine.sort_unstable();
        refresh_one(q, username, &mine.join(" "))?;
    }
    Ok(())
}

fn refresh_one<Q: Queryable>(q: &mut Q, username: &str, aliases: &str) -> Result<(), StoreError> {
    let row = row::first(
        q,
        "mailbox",
        "SELECT m.domain, m.name, m.kind, m.multiple_bookings, \
           IFNULL((SELECT GROUP_CONCAT(m.local_part, '@', ad.alias_domain SEPARATOR ' ') \
             FROM alias_domain ad WHERE ad.target_domain = m.domain), ''), \
           IFNULL((SELECT GROUP_CONCAT(send_as SEPARATOR ' ') FROM sender_acl \
             WHERE logged_in_as = :username AND send_as NOT LIKE '@%' AND external = '1'), '') \
         FROM mailbox m WHERE m.username = :username AND m.active = '1'",
        params! { "username" => username },
    )?;
    let Some(mut r) = row else {
        q.exec_drop("DELETE FROM _sogo_static_view WHERE c_uid = ?", (username,))?;
        return Ok(());
    };
    let domain: String = r.next("domain")?;
    let name: Option<String> = r.next("name")?;
    let kind: String = r.next("kind")?;
    let bookings: i64 = r.next("multiple_bookings")?;
    let ad_aliases: String = r.next("alias_domain")?;
    let ext_acl: String = r.next("sender_acl")?;
    let random = random_hex(40)?;
    let (secret, salt) = random.split_at(48);
    q.exec_drop(
        "INSERT INTO _sogo_static_view (c_uid, domain, c_name, c_password, c_cn, mail, aliases, ad_aliases, ext_acl, kind, multiple_bookings) \
         VALUES (:username, :domain, :username, \
           CONCAT('{SSHA256}', TO_BASE64(CONCAT(UNHEX(SHA2(CONCAT(UNHEX(:secret), UNHEX(:salt)), 256)), UNHEX(:salt)))), \
           :name, :username, :aliases, :ad_aliases, :ext_acl, :kind, :bookings) \
         ON DUPLICATE KEY UPDATE domain = VALUES(domain), c_name = VALUES(c_name), \
           c_password = VALUES(c_password), c_cn = VALUES(c_cn), mail = VALUES(mail), \
           aliases = VALUES(aliases), ad_aliases = VALUES(ad_aliases), ext_acl = VALUES(ext_acl), \
           kind = VALUES(kind), multiple_bookings = VALUES(multiple_bookings)",
        params! {
            "username" => username, "domain" => domain, "secret" => secret, "salt" => salt,
            "name" => name, "aliases" => aliases, "ad_aliases" => ad_aliases,
            "ext_acl" => ext_acl, "kind" => kind, "bookings" => bookings,
        },
    )?;
    Ok(())
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> Result<String, mysql::Error> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(mysql::Error::IoError)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
