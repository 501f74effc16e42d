//! Any body → parse → translate: never panics, and every event produced
//! passes the documented limits (`Event::check`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prefect_pagerduty_bridge::actions::Action;
use prefect_pagerduty_bridge::pagerduty::Severity;
use prefect_pagerduty_bridge::secret::Secret;
use prefect_pagerduty_bridge::{prefect, translate};

fuzz_target!(|data: &[u8]| {
    let options = translate::Options {
        source: "prefect".to_owned(),
        ui_base: url::Url::parse("https://app.prefect.cloud/account/a/workspace/w").ok(),
    };
    // The first byte picks the action's severity and whether a header id is sent.
    let severity = match data.first().copied().unwrap_or(0) % 5 {
        0 => None,
        1 => Some(Severity::Critical),
        2 => Some(Severity::Error),
        3 => Some(Severity::Warning),
        _ => Some(Severity::Info),
    };
    let action = Action { name: "fuzz".to_owned(), routing_key: Secret::new("R0UTINGKEY0000000000000000000000"), severity };
    let header = (data.first().copied().unwrap_or(0) & 0x80 != 0).then_some("header-event-id");
    let n = prefect::parse(data, header);
    let t = translate::translate(n, &action, &options);
    if let Err(problems) = t.event.check() {
        panic!("event out of limits: {problems:?}");
    }
    assert!(t.dedup_key.chars().count() <= 255);
    assert!(!t.dedup_key.is_empty());
});
