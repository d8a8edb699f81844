//! Arbitrary text into the config parser and validator: an error naming the problem, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_backup_agent::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text);
    }
});
