//! Property tests for the pure planners (no servers): whatever the directory
//! and the mailbox table hold, sync's plans keep their promises, and the
//! domain-room arithmetic never overflows or hands out more than the domain
//! has. Run with the rest of the suite (`cargo test`); `PROPTEST_CASES`
//! raises the number of cases.

use mailcow_ldap_auth::config::{parse_str, Config, UiSettings};
use mailcow_ldap_auth::mailcow::{DomainRow, LdapMailbox, MailboxRow, Template};
use mailcow_ldap_auth::provision::{check_domain_room, MIB};
use mailcow_ldap_auth::sync::{find_conflicts, plan_missing, plan_page, Change, DirUser, Hold};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn cfg(import: bool, full: bool, grace_min: u64, percent: u32) -> Config {
    parse_str(&format!(
        "[ldap]\nhosts = \"h\"\nbase_dn = \"dc=x\"\nattribute_field = \"ou\"\n\
         [[attribute_mapping]]\nattribute = \"a\"\ntemplate = \"T\"\n\
         [sync]\nimport_users = {import}\nperiodic_full_sync = {full}\ndeactivate_missing = true\n\
         missing_grace_hours = {grace_min}\nmax_deactivate_percent = {percent}\n"
    ))
    .unwrap()
    .validate(Path::new("t"), UiSettings::default())
    .unwrap()
}

fn templates() -> HashMap<String, Template> {
    let t = Template::new("T".into(), Some(r#"{"quota":0,"imap_access":1}"#.into()));
    HashMap::from([("T".to_owned(), t)])
}

/// Addresses from a small pool, so that duplicates and existing rows happen.
fn address() -> impl Strategy<Value = String> {
    (0u8..12).prop_map(|i| format!("u{i}@example.org"))
}

fn dir_user() -> impl Strategy<Value = DirUser> {
    (
        address(),
        prop::option::of(Just("T".to_owned())),
        any::<bool>(),
    )
        .prop_map(|(a, t, bad)| DirUser {
            dn: format!("uid={a},dc=x"),
            address: if bad { Err("no address".into()) } else { Ok(a) },
            name: "N".into(),
            mapped_template: t.clone(),
            template: t,
            retire: None,
            aliases: Default::default(),
        })
}

fn row() -> impl Strategy<Value = MailboxRow> {
    (
        address(),
        prop_oneof![Just("ldap"), Just("mailcow")],
        0i64..3,
    )
        .prop_map(|(a, src, active)| MailboxRow {
            username: a.clone(),
            name: "N".into(),
            domain: "example.org".into(),
            active,
            authsource: src.into(),
            quota: 0,
            attributes: Default::default(),
            domain_active: Some(true),
        })
}

fn changed_user(c: &Change) -> Option<&str> {
    match c {
        Change::Create(n) => Some(&n.username),
        Change::Update(u) => Some(&u.username),
        Change::Reactivate { username, .. }
        | Change::MarkMissing { username, .. }
        | Change::Deactivate { username, .. }
        | Change::Retire { username, .. }
        | Change::Unretire { username } => Some(username),
        Change::Skip { .. } | Change::Conflict { .. } => None,
    }
}

proptest! {
    #[test]
    fn plan_page_creates_each_address_once_and_never_touches_mailcows_own(
        users in prop::collection::vec(dir_user(), 0..30),
        rows in prop::collection::vec(row(), 0..12),
        import in any::<bool>(),
        full in any::<bool>(),
    ) {
        let c = cfg(import, full, 60, 50);
        let rows: HashMap<String, MailboxRow> =
            rows.into_iter().map(|r| (r.username.clone(), r)).collect();
        let mut seen = HashSet::new();
        let plan = plan_page(&c, &users, &rows, &templates(), &mut seen, &Default::default(), "2026-01-01 00:00:00");
        let mut created = HashSet::new();
        for change in &plan {
            if let Change::Create(n) = change {
                prop_assert!(import, "created with import_users off");
                prop_assert!(created.insert(n.username.clone()), "{} created twice", n.username);
                prop_assert!(!rows.contains_key(&n.username), "{} exists already", n.username);
            }
            if let Change::Update(_) = change {
                prop_assert!(full, "updated with periodic_full_sync off");
            }
            if let Some(u) = changed_user(change) {
                if let Some(r) = rows.get(u) {
                    prop_assert!(r.authsource == "ldap", "{} is mailcow's own", u);
                }
            }
        }
        // Every good address was seen exactly once, whatever was planned.
        for u in &users {
            if let Ok(a) = &u.address {
                prop_assert!(seen.contains(a));
            }
        }
    }

    #[test]
    fn an_address_two_entries_share_is_left_alone_on_every_page(
        users in prop::collection::vec(dir_user(), 0..30),
        rows in prop::collection::vec(row(), 0..12),
        split in 0usize..30,
    ) {
        // Distinct entries (the generator's DNs follow the address).
        let users: Vec<DirUser> = users
            .into_iter()
            .enumerate()
            .map(|(i, u)| DirUser { dn: format!("uid=e{i},dc=x"), ..u })
            .collect();
        let c = cfg(true, true, 60, 50);
        let rows: HashMap<String, MailboxRow> =
            rows.into_iter().map(|r| (r.username.clone(), r)).collect();
        let conflicts = find_conflicts(
            users.iter().filter_map(|u| u.address.as_deref().ok().map(|a| (u.dn.as_str(), a))),
        );
        // Two pages, the split anywhere: a twin may be on either.
        let split = split.min(users.len());
        let mut seen = HashSet::new();
        let now = "2026-01-01 00:00:00";
        let mut plan = plan_page(&c, &users[..split], &rows, &templates(), &mut seen, &conflicts, now);
        plan.extend(plan_page(&c, &users[split..], &rows, &templates(), &mut seen, &conflicts, now));
        for (a, dns) in &conflicts {
            prop_assert!(dns.len() >= 2);
            let reported = plan
                .iter()
                .filter(|ch| matches!(ch, Change::Conflict { address, .. } if address == a))
                .count();
            prop_assert_eq!(reported, 1, "{} reported once", a);
            prop_assert!(plan.iter().all(|ch| changed_user(ch) != Some(a.as_str())), "{} changed", a);
            prop_assert!(seen.contains(a), "{} not seen: its mailbox would be marked missing", a);
        }
        for ch in &plan {
            if let Change::Conflict { address, dns, .. } = ch {
                prop_assert_eq!(Some(dns), conflicts.get(address));
            }
        }
    }

    #[test]
    fn plan_missing_never_acts_on_present_admin_disabled_or_incomplete(
        // Keyed by address: the username is the mailbox table's primary key.
        boxes in prop::collection::hash_map(
            address(), (0i64..3, prop::option::of(0u64..1_000_000), any::<bool>()), 0..12),
        present in prop::collection::hash_set(address(), 0..12),
        incomplete in any::<bool>(),
        grace_min in 1u64..200,
        percent in 0u32..=100,
        now in 100_000u64..2_000_000,
    ) {
        let c = cfg(true, true, grace_min, percent);
        let boxes: Vec<LdapMailbox> = boxes
            .into_iter()
            .map(|(a, (active, missing_since, by_sync))| LdapMailbox {
                username: a.to_uppercase(),
                active,
                missing_since,
                deactivated_by_sync: by_sync,
            })
            .collect();
        let why = incomplete.then(|| "cut short".to_owned());
        match plan_missing(&c, &boxes, &present, why, now) {
            Err(Hold::Incomplete(_)) => prop_assert!(incomplete),
            Err(Hold::OverCap { missing, total, .. }) => {
                prop_assert!(!incomplete);
                prop_assert!(missing * 100 > total * percent as usize);
            }
            Ok(plan) => {
                prop_assert!(!incomplete, "acted on an incomplete search");
                let grace = grace_min * 3600;
                for change in &plan {
                    let Some(u) = changed_user(change) else { continue };
                    prop_assert!(!present.contains(&u.to_lowercase()), "{} is present", u);
                    let b = boxes.iter().find(|b| b.username == u).unwrap();
                    prop_assert!(b.active != 0 || b.deactivated_by_sync, "{} admin-disabled", u);
                    prop_assert!(!b.deactivated_by_sync, "{} already deactivated", u);
                    if let Change::Deactivate { marked_before, .. } = change {
                        let since = b.missing_since.unwrap();
                        prop_assert!(now - since >= grace);
                        prop_assert!(*marked_before <= now - grace);
                    }
                }
                let acting = plan.iter().filter(|c| !matches!(c, Change::Skip { .. })).count();
                prop_assert!(acting * 100 <= boxes.len() * percent as usize || acting == 0);
            }
        }
    }

    #[test]
    fn domain_room_never_overflows_or_exceeds_the_domain(
        template_quota in prop_oneof![Just(0u64), 1u64..u64::MAX, Just(u64::MAX)],
        defquota in any::<u64>(),
        maxquota in any::<u64>(),
        quota in any::<u64>(),
        used in any::<u64>(),
        count in 0i64..10,
        max in 0i64..10,
    ) {
        let d = DomainRow {
            domain: "example.org".into(),
            active: true,
            max_mailboxes: max,
            defquota_mib: defquota,
            maxquota_mib: maxquota,
            quota_mib: quota,
            mailbox_count: count,
            quota_used_bytes: used,
        };
        if let Ok(q) = check_domain_room("example.org", template_quota, Some(&d)) {
            prop_assert!(count < max);
            prop_assert!(q % MIB == 0 && q <= template_quota);
            prop_assert!(q <= maxquota.saturating_mul(MIB));
            prop_assert!(q <= quota.saturating_mul(MIB).saturating_sub(used));
        }
    }
}
