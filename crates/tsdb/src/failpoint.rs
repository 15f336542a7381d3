//! Named failpoints for crash and fault tests.
//!
//! Code calls [`hit`] at interesting moments (between writing a block and
//! publishing it, between compaction steps...). Normally that is a lookup
//! in an empty table. Tests arm a failpoint in a child process through the
//! environment, `STRATUS_FAILPOINTS="block.upload.after=abort;..."`, or in
//! process with [`set`]. Actions: `abort` (die at once, like kill -9),
//! `error` (return an error), `sleep(ms)`.

use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::RwLock;

use crate::error::{FailpointSnafu, Result};

#[derive(Debug, Clone)]
enum Action {
    Abort,
    Error,
    Sleep(u64),
}

fn table() -> &'static RwLock<HashMap<String, Action>> {
    static T: OnceLock<RwLock<HashMap<String, Action>>> = OnceLock::new();
    T.get_or_init(|| {
        let mut m = HashMap::new();
        if let Ok(spec) = std::env::var("STRATUS_FAILPOINTS") {
            for item in spec.split(';').filter(|s| !s.is_empty()) {
                if let Some((name, act)) = item.split_once('=') {
                    if let Some(a) = parse(act) {
                        m.insert(name.trim().to_string(), a);
                    }
                }
            }
        }
        RwLock::new(m)
    })
}

fn parse(s: &str) -> Option<Action> {
    let s = s.trim();
    match s {
        "abort" => Some(Action::Abort),
        "error" => Some(Action::Error),
        _ => s
            .strip_prefix("sleep(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse().ok())
            .map(Action::Sleep),
    }
}

/// Arms (`Some(action)`) or disarms (`None`) a failpoint in this process.
pub fn set(name: &str, action: Option<&str>) {
    let mut t = table().write();
    match action.and_then(parse) {
        Some(a) => {
            t.insert(name.to_string(), a);
        }
        None => {
            t.remove(name);
        }
    }
}

/// Triggers failpoint `name` if armed.
pub fn hit(name: &str) -> Result<()> {
    let a = {
        let t = table().read();
        if t.is_empty() {
            return Ok(());
        }
        t.get(name).cloned()
    };
    match a {
        None => Ok(()),
        Some(Action::Abort) => std::process::abort(),
        Some(Action::Error) => FailpointSnafu { name }.fail(),
        Some(Action::Sleep(ms)) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
    }
}
