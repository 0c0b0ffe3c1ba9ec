//! A misbehaving masking plugin for fault tests; `mode` in its manifest picks the fault:
//! `trap` (plan panics), `spin` (plan never returns), `short` (one mask too few),
//! `transform-trap` (plans every column custom, then panics in transform).

use sluice_sdk::{Column, Mask, Masker, PluginError, Session, Statement};

struct TestMaskFaults;

fn mode() -> String {
    sluice_sdk::config("mode").unwrap_or_default()
}

impl Masker for TestMaskFaults {
    fn plan(_: &Session, _: Statement, columns: Vec<Column>) -> Result<Vec<Mask>, PluginError> {
        match mode().as_str() {
            "trap" => panic!("plan trapped on purpose"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "short" => Ok(vec![Mask::Keep; columns.len().saturating_sub(1)]),
            _ => Ok(vec![Mask::Custom; columns.len()]),
        }
    }

    fn transform(
        _: &Session,
        _: Column,
        _: Vec<Option<String>>,
    ) -> Result<Vec<Option<String>>, PluginError> {
        panic!("transform trapped on purpose")
    }
}

sluice_sdk::export_masker!(TestMaskFaults);
