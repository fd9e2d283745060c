//! The `ContrastiveRun` spec (parse, then `resolve()`) and the run-config document.
#![no_main]

use kontrast_api::config::RunConfig;
use kontrast_api::v1alpha1::ContrastiveRunSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = serde_json::from_str::<ContrastiveRunSpec>(text) {
        match spec.resolve() {
            Ok(config) => {
                let again = RunConfig::from_json(&config.to_json()).expect("reads back");
                assert_eq!(again, config);
            }
            Err(e) => assert!(e.violations.iter().all(|v| v.field.starts_with("spec."))),
        }
    }
    if let Ok(config) = RunConfig::from_json(text) {
        let _ = config.to_json();
    }
});
