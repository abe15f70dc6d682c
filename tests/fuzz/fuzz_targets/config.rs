//! Config parsing: `Config::from_yaml_str` then `validate()`.
//!
//! Input (text): a YAML document, optionally followed by a NUL byte and
//! `NAME=value` lines used as the environment (`PORTCULLIS__…` overrides).
//!
//! Properties: nothing panics; a config that validates also compiles its
//! policy (validation and compilation agree), and every error names a key.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use portcullis::config::{Config, MapEnv};
use portcullis::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (yaml, env) = text.split_once('\0').unwrap_or((&text, ""));
    let env = MapEnv(
        env.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<BTreeMap<_, _>>(),
    );
    let cfg = match Config::from_yaml_str(yaml, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = format!("{cfg:?}");
    match cfg.validate() {
        Ok(()) => {
            if let Err(e) = Policy::compile(&cfg.policy) {
                panic!("validate() accepted a policy that does not compile: {e}");
            }
        }
        Err(errs) => {
            assert!(!errs.is_empty());
            for e in errs {
                assert!(!e.key.is_empty(), "error without a key: {e}");
                let _ = e.to_string();
            }
        }
    }
});
