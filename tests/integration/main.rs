//! Integration tests: the built binary against real servers started privately
//! (see `support`). One test binary, one module per area.

mod support;

mod checkpassword;
mod diagnostics;
mod e2e;
mod provision;
mod sync;
