//! `mailcow-ldap-auth`: see the library crate and `--help`.

fn main() -> std::process::ExitCode {
    mailcow_ldap_auth::secret::no_core_dumps();
    mailcow_ldap_auth::cli::run(std::env::args_os().skip(1).collect())
}
