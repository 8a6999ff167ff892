//! Command-line parsing and dispatch. Global options come before the command,
//! so Dovecot's `args = /usr/bin/mailcow-ldap-auth -c FILE checkpassword` works.

use crate::config;
use crate::diagnose;
use crate::outcome::Verdict;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

pub const USAGE: &str = "\
mailcow-ldap-auth - authenticate mail users against LDAP for Dovecot and mailcow

Usage: mailcow-ldap-auth [-c FILE] COMMAND [ARGS]

Commands:
  checkpassword REPLY [ARGS...]  Dovecot checkpassword passdb/userdb (credentials on fd 3)
  test [--lookup] [--dry-run] USER
                                 Try one login step by step (password from a prompt or
                                 stdin); --dry-run writes nothing to the database
  connection-test                Check every LDAP host: DNS, TCP, TLS, service bind, base DN,
                                 filter; and the database and templates when configured
  sync [--dry-run] [--force] [--every DURATION]
                                 Import users and sync mailboxes from the directory (run it from
                                 a timer; it decides itself when a run is due); --every 60s keeps
                                 running and tries every 60 s (5m, 1h), until SIGTERM
  health                         Container health check: serve's /health on its http_listen port,
                                 or the last run of sync --every (exit 0 healthy, 1 unhealthy)
  serve                          Long-running service: HTTP/JSON for Dovecot's Lua passdb
                                 (mailcow, Dovecot 2.4) and a saslauthd socket for Postfix

Options:
  -c, --config FILE  Configuration file (default /etc/mailcow-ldap-auth/config.toml,
                     or $MAILCOW_LDAP_AUTH_CONFIG)
  -h, --help         Show this help
  -V, --version      Show the version

Exit status of checkpassword: reply program's (0, or 2 for lookups) on success,
1 rejected, 3 unknown user (lookup), 111 temporary failure, 2 misuse.
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Checkpassword {
        reply: Vec<OsString>,
    },
    Test {
        user: String,
        lookup: bool,
        dry_run: bool,
    },
    ConnectionTest,
    Serve,
    Sync {
        dry_run: bool,
        force: bool,
        every: Option<std::time::Duration>,
    },
    Health,
    Help,
    Version,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub command: Command,
}

/// Parse the arguments (without the program name).
pub fn parse(args: Vec<OsString>) -> Result<Cli, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut config = None;
    let command = loop {
        match p.next().map_err(|e| e.to_string())? {
            Some(Short('c') | Long("config")) => {
                config = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?))
            }
            Some(Short('h') | Long("help")) => break Command::Help,
            Some(Short('V') | Long("version")) => break Command::Version,
            Some(Value(cmd)) => {
                let cmd = cmd
                    .string()
                    .map_err(|_| "command is not UTF-8".to_owned())?;
                break match cmd.as_str() {
                    // Everything after the command belongs to the reply program.
                    "checkpassword" => Command::Checkpassword {
                        reply: p.raw_args().map_err(|e| e.to_string())?.collect(),
                    },
                    "test" => parse_test(&mut p)?,
                    "connection-test" => {
                        no_more(&mut p)?;
                        Command::ConnectionTest
                    }
                    "sync" => parse_sync(&mut p)?,
                    "serve" => {
                        no_more(&mut p)?;
                        Command::Serve
                    }
                    "health" => {
                        no_more(&mut p)?;
                        Command::Health
                    }
                    "help" => Command::Help,
                    other => return Err(format!("unknown command \"{other}\" (see --help)")),
                };
            }
            Some(other) => return Err(other.unexpected().to_string()),
            None => return Err("no command given (see --help)".into()),
        }
    };
    Ok(Cli { config, command })
}

fn parse_test(p: &mut lexopt::Parser) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut user = None;
    let mut lookup = false;
    let mut dry_run = false;
    while let Some(a) = p.next().map_err(|e| e.to_string())? {
        match a {
            Long("lookup") => lookup = true,
            Long("dry-run") => dry_run = true,
            Value(v) if user.is_none() => {
                user = Some(v.string().map_err(|_| "USER is not UTF-8".to_owned())?)
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let user = user.ok_or(
        "test needs a USER (the password is asked for, never taken from the command line)",
    )?;
    Ok(Command::Test {
        user,
        lookup,
        dry_run,
    })
}

fn parse_sync(p: &mut lexopt::Parser) -> Result<Command, String> {
    use lexopt::prelude::*;
    let (mut dry_run, mut force, mut every) = (false, false, None);
    while let Some(a) = p.next().map_err(|e| e.to_string())? {
        match a {
            Long("dry-run") => dry_run = true,
            Long("force") => force = true,
            Long("every") => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.to_str().ok_or("--every: not UTF-8")?;
                every =
                    Some(crate::schedule::parse_duration(v).map_err(|e| format!("--every: {e}"))?);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Command::Sync {
        dry_run,
        force,
        every,
    })
}

fn no_more(p: &mut lexopt::Parser) -> Result<(), String> {
    match p.next().map_err(|e| e.to_string())? {
        None => Ok(()),
        Some(a) => Err(a.unexpected().to_string()),
    }
}

/// Run the program; returns the process exit status.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let is_checkpassword = args.iter().any(|a| a == "checkpassword");
    let cli = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mailcow-ldap-auth: {e}");
            return ExitCode::from(if is_checkpassword {
                Verdict::Temporary.exit_code()
            } else {
                2
            });
        }
    };
    let path = config::resolve_path(cli.config);
    // A bug must never look like a wrong password to Dovecot: any panic is a
    // temporary failure (111), logged without the request's data.
    if matches!(cli.command, Command::Checkpassword { .. }) {
        std::panic::set_hook(Box::new(|info| {
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            crate::log::error(&format!("result=tempfail reason=\"internal error{place}\""));
            std::process::exit(i32::from(Verdict::Temporary.exit_code()));
        }));
    }
    match cli.command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("mailcow-ldap-auth {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Checkpassword { reply } => crate::checkpassword::run(&path, &reply),
        Command::Test {
            user,
            lookup,
            dry_run,
        } => with_config(&path, |cfg| {
            diagnose::test_user(cfg, &user, lookup, dry_run)
        }),
        Command::ConnectionTest => with_config(&path, diagnose::connection_test),
        Command::Serve => crate::serve::run(&path),
        Command::Sync {
            dry_run,
            force,
            every: None,
        } => with_config(&path, |cfg| {
            crate::sync::run(cfg, crate::sync::Options { dry_run, force })
        }),
        Command::Sync {
            dry_run,
            force,
            every: Some(every),
        } => crate::schedule::run(&path, every, crate::sync::Options { dry_run, force }),
        Command::Health => crate::healthcheck::run(&path),
    }
}

/// Load the configuration for an admin command; a bad one is printed and exits 111
/// (what checkpassword would answer with it).
fn with_config(path: &std::path::Path, f: impl FnOnce(&config::Config) -> ExitCode) -> ExitCode {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    match crate::mailcow::load_config(path, deadline) {
        Ok((cfg, _)) => {
            crate::log::init(config::LogTarget::Stderr);
            f(&cfg)
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(Verdict::Temporary.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cli, String> {
        parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn dovecot_style_arguments() {
        let c = p(&["checkpassword", "/usr/lib/dovecot/checkpassword-reply"]).unwrap();
        assert_eq!(
            c.command,
            Command::Checkpassword {
                reply: vec!["/usr/lib/dovecot/checkpassword-reply".into()]
            }
        );
        let c = p(&["-c", "/etc/x.toml", "checkpassword", "/r", "-x", "--y"]).unwrap();
        assert_eq!(c.config, Some(PathBuf::from("/etc/x.toml")));
        assert_eq!(
            c.command,
            Command::Checkpassword {
                reply: vec!["/r".into(), "-x".into(), "--y".into()]
            }
        );
    }

    #[test]
    fn test_command_never_takes_a_password() {
        assert_eq!(
            p(&["test", "jo"]).unwrap().command,
            Command::Test {
                user: "jo".into(),
                lookup: false,
                dry_run: false
            }
        );
        assert_eq!(
            p(&["test", "--lookup", "jo"]).unwrap().command,
            Command::Test {
                user: "jo".into(),
                lookup: true,
                dry_run: false
            }
        );
        assert_eq!(
            p(&["test", "--dry-run", "jo"]).unwrap().command,
            Command::Test {
                user: "jo".into(),
                lookup: false,
                dry_run: true
            }
        );
        assert!(p(&["test", "jo", "secret"]).is_err());
        assert!(p(&["test"]).is_err());
    }

    #[test]
    fn errors() {
        assert!(p(&[]).is_err());
        assert!(p(&["frobnicate"]).is_err());
        assert!(p(&["connection-test", "x"]).is_err());
        assert_eq!(p(&["--version"]).unwrap().command, Command::Version);
        assert_eq!(
            p(&["sync", "--force"]).unwrap().command,
            Command::Sync {
                dry_run: false,
                force: true,
                every: None
            }
        );
        assert_eq!(
            p(&["sync", "--every", "5m"]).unwrap().command,
            Command::Sync {
                dry_run: false,
                force: false,
                every: Some(std::time::Duration::from_secs(300))
            }
        );
        assert!(p(&["sync", "--every", "soon"]).is_err());
        assert!(p(&["sync", "--every"]).is_err());
        assert_eq!(p(&["health"]).unwrap().command, Command::Health);
        assert!(p(&["health", "x"]).is_err());
        assert!(p(&["sync", "now"]).is_err());
    }
}
