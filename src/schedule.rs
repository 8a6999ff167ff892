//! `sync --every DURATION`: the periodic sync as one long-running process (the
//! container's command), instead of a timer or a shell loop around `sync`.
//!
//! Every DURATION it reads the configuration again (with
//! `settings_from_database`, mailcow's UI settings too) and runs what `sync`
//! runs, which itself decides from the interval whether a run is due. SIGTERM
//! or SIGINT ends the wait at once; during a run, the run stops before its next
//! page (a page is applied in its own transactions, and a stopped run does not
//! count as completed: nothing is marked missing, the next run starts over), so
//! the process exits promptly without a half-written run. After every run the
//! time and exit status go to `state_dir/sync-every.status` for `health`.

use crate::config::Config;
use crate::log;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Written after every run: `{"time": <unix>, "exit": <status>, "every": <seconds>}`.
pub const STATUS_FILE: &str = "sync-every.status";

/// `30s`, `15m`, `1h` or plain seconds; at least one second, at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration (e.g. 60s, 5m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("\"{s}\": the unit must be s, m or h")),
    };
    if !(1..=86_400).contains(&secs) {
        return Err(format!("\"{s}\": between 1 s and 24 h"));
    }
    Ok(Duration::from_secs(secs))
}

/// The `sync --every` command.
pub fn run(config_path: &Path, every: Duration, opts: crate::sync::Options) -> ExitCode {
    log::init(crate::config::LogTarget::Stderr);
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mailcow-ldap-auth sync --every: cannot handle signals: {e}");
            return ExitCode::from(111);
        }
    };
    let (wake, stopped) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            crate::sync::STOP.store(true, Ordering::SeqCst);
            let _ = wake.send(());
        }
    });
    log::info(&format!(
        "sync --every {}s: started (SIGTERM stops it before the next page of a run)",
        every.as_secs()
    ));
    loop {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        let code = match crate::mailcow::load_config(config_path, deadline) {
            Ok((cfg, _)) => {
                let code = status_of(crate::sync::run(&cfg, opts));
                write_status(&cfg, every, code);
                code
            }
            Err(e) => {
                log::error(&format!("sync --every: {e}"));
                111
            }
        };
        if code != 0 {
            log::warn(&format!("sync --every: the run exited with {code}"));
        }
        if crate::sync::STOP.load(Ordering::SeqCst) {
            break;
        }
        let wait = every.saturating_sub(started.elapsed());
        match stopped.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    log::info("sync --every: stopped by a signal");
    ExitCode::SUCCESS
}

/// The number inside an `ExitCode` (which has no getter; it has equality).
fn status_of(code: ExitCode) -> u8 {
    (0..=u8::MAX)
        .find(|&n| ExitCode::from(n) == code)
        .unwrap_or(1)
}

fn write_status(cfg: &Config, every: Duration, code: u8) {
    let text = serde_json::json!({
        "time": crate::health::unix_now(),
        "exit": code,
        "every": every.as_secs(),
    })
    .to_string();
    if let Err(e) = crate::state_dir::write_atomic(&cfg.state_dir, STATUS_FILE, text.as_bytes()) {
        log::warn(&format!(
            "sync --every: cannot write {}: {e}",
            cfg.state_dir.join(STATUS_FILE).display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "0",
            "m",
            "5d",
            "-1s",
            "25h",
            "1.5m",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
