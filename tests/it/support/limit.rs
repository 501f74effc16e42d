//! A time limit for every test that starts a bridge or a PagerDuty double,
//! under plain `cargo test` as under nextest: a test still running after
//! [`LIMIT`] (or `PPB_TEST_LIMIT_SECS`) ends the whole run with its name, so
//! no single test can hang CI.
//!
//! libtest runs each test on a thread named after it; the first helper a
//! test calls registers that thread, and the thread's end (a thread-local's
//! destructor) unregisters it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The default limit; the slowest test takes well under a minute.
const LIMIT: Duration = Duration::from_secs(240);

fn running() -> &'static Mutex<HashMap<String, Instant>> {
    static RUNNING: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    RUNNING.get_or_init(|| {
        let limit = std::env::var("PPB_TEST_LIMIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(LIMIT, Duration::from_secs);
        std::thread::Builder::new()
            .name("test-time-limit".into())
            .spawn(move || watch(limit))
            .expect("spawn the time-limit thread");
        Mutex::new(HashMap::new())
    })
}

fn watch(limit: Duration) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let over: Vec<String> = running()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, started)| started.elapsed() > limit)
            .map(|(name, _)| name.clone())
            .collect();
        if !over.is_empty() {
            // Straight to the process's stderr: libtest captures `eprintln!`
            // of the test thread that spawned this one.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n{} ran longer than the per-test limit of {limit:?} (PPB_TEST_LIMIT_SECS); \
                 ending the test run",
                over.join(", ")
            );
            std::process::exit(101);
        }
    }
}

struct Registered(String);

impl Drop for Registered {
    fn drop(&mut self) {
        running()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.0);
    }
}

thread_local! {
    static REGISTERED: std::cell::RefCell<Option<Registered>> = const { std::cell::RefCell::new(None) };
}

/// Starts the calling test's clock, once per test thread.
pub fn arm() {
    let Some(name) = std::thread::current().name().map(str::to_owned) else {
        return;
    };
    // Only libtest's test threads (named after the test, `module::test`);
    // not a runtime's worker threads or the main thread.
    if !name.contains("::") {
        return;
    }
    REGISTERED.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_none() {
            running()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(name.clone(), Instant::now());
            *r = Some(Registered(name));
        }
    });
}
