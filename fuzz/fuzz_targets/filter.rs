//! The list filter parser on arbitrary text, for every kind: it parses or
//! refuses with INVALID_FIELD, never panics, and a parsed filter can be
//! matched against a resource.

#![no_main]

use arbiter_api::v1::{Prompt, User, VirtualMachine};
use arbiter_core::Error;
use arbiter_core::filter::Filter;
use arbiter_core::kinds::{PROMPT, USER, VM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vm = VirtualMachine {
        display_name: "web".into(),
        labels: [("env".to_string(), "prod".to_string())].into(),
        ..Default::default()
    };
    let user = User {
        email: "a@example.com".into(),
        ..Default::default()
    };
    let prompt = Prompt::default();
    for kind in [&VM, &USER, &PROMPT] {
        match Filter::parse(kind, text) {
            Ok(filter) if std::ptr::eq(kind, &VM) => drop(filter.matches(&vm)),
            Ok(filter) if std::ptr::eq(kind, &USER) => drop(filter.matches(&user)),
            Ok(filter) => drop(filter.matches(&prompt)),
            Err(Error::InvalidField { violations }) => {
                assert!(!violations.is_empty() && violations.len() <= 8, "{violations:?}");
            }
            Err(e) => panic!("a filter answered {e:?}"),
        }
    }
});
