//! Integration tests: the built binary against real servers started privately
//! (see `support`). One test binary, one module per area.

mod support;

mod ad;
mod aliases;
mod checkpassword;
mod contrib_configs;
mod diagnostics;
mod e2e;
mod image;
mod load;
mod mailcow_install;
mod mailcow_ui;
mod passdb;
mod php_json;
mod planners;
mod provision;
mod serve;
mod serve_e2e;
mod serve_limits;
mod sync;
mod user_binds;
