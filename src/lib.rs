//! mailcow-ldap-auth: authenticate mail users against LDAP / Active Directory
//! for Dovecot (checkpassword) and keep their mailcow mailboxes in step.
//!
//! The binary is a thin shell around [`cli::run`]; every piece of logic lives
//! in a module named after its part of the domain.

pub mod auth;
pub mod checkpassword;
pub mod cli;
pub mod config;
pub mod cronlog;
pub mod db_slot;
pub mod diagnose;
pub mod directory;
pub mod health;
pub mod healthcheck;
pub mod log;
pub mod mailcow;
pub mod outcome;
pub mod passhash;
pub mod provision;
pub mod schedule;
pub mod secret;
pub mod serve;
pub mod state_dir;
pub mod sync;
pub mod tls;
pub mod trusted_file;
