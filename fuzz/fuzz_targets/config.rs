//! Configuration text (and a few environment overrides) through `Config::from_toml_with_env`:
//! parse, environment, every section's `validate()`. Properties: no panic; an error's line and
//! column lie within the text; a configuration that loads prints (`to_toml`, and redacted) as
//! TOML that loads again to the same configuration.
//!
//! Input: an optional environment block first: lines `NAME=value` up to a line `---`, then
//! the TOML text. Without `---` the whole input is the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tallyd::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (env, text) = match input.split_once("\n---\n") {
        Some((env, text)) => (
            env.lines()
                .filter_map(|l| l.split_once('='))
                .take(8)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
            text,
        ),
        None => (Vec::new(), input),
    };
    match Config::from_toml_with_env(text, "fuzz.toml", &env) {
        Ok(cfg) => {
            let _ = cfg.to_toml_redacted();
            let printed = cfg.to_toml();
            let again = Config::from_toml_with_env(&printed, "printed.toml", &[])
                .unwrap_or_else(|e| panic!("printed config does not load: {e}\n{printed}"));
            // Compared as printed: a `nan` float is not equal to itself.
            assert_eq!(again.to_toml(), printed, "printed config loads differently");
        }
        Err(e) => {
            let _ = e.to_string();
            let lines = text.lines().count().max(1);
            if let Some(line) = e.line {
                assert!((1..=lines + 1).contains(&line), "line {line} of {lines}");
            }
        }
    }
});
