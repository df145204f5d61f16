//! The fuzz targets' seeds and every input a fuzzer ever crashed on
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`), run through the
//! same entry points the fuzzers call (`urpnet_node::fuzz`), on the stable
//! toolchain with the rest of the suite: a crash found once stays fixed.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("ticket_events", urpnet_node::fuzz::ticket_events),
    ("shared_versions", urpnet_node::fuzz::shared_versions),
    ("archive_batch", urpnet_node::fuzz::archive_batch),
    ("open311_form", urpnet_node::fuzz::open311_form),
    ("photo", urpnet_node::fuzz::photo),
    ("node_config", urpnet_node::fuzz::node_config),
    ("registry_config", urpnet_registry::config::fuzz),
    ("taxonomy", urpnet_node::fuzz::taxonomy),
    ("charter_import", urpnet_node::fuzz::charter_import),
    ("faq_sample", urpnet_node::fuzz::faq_sample),
    ("ics", urpnet_node::fuzz::ics),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_seeds_and_a_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(
            !inputs(&fuzz_dir().join("seeds").join(name)).is_empty(),
            "fuzz/seeds/{name} is empty: run `cargo run -p urpnet-examples --bin fuzz-seeds`"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no target {name}"
        );
    }
}

#[test]
fn seeds_and_past_crashes_pass_every_target() {
    let mut ran = 0;
    for (name, target) in TARGETS {
        for dir in ["seeds", "regressions"] {
            for file in inputs(&fuzz_dir().join(dir).join(name)) {
                let bytes = std::fs::read(&file).expect("read input");
                let result = std::panic::catch_unwind(|| target(&bytes));
                assert!(result.is_ok(), "{name}: {} panicked", file.display());
                ran += 1;
            }
        }
    }
    assert!(ran >= TARGETS.len(), "only {ran} inputs ran");
}

/// The signed seeds reach the payload rules and pass them: a seed refused
/// at the signature would leave the decoders behind it unfuzzed.
#[test]
fn signed_seeds_are_accepted_so_the_fuzzer_starts_past_the_signature() {
    for (target, file) in [
        ("ticket_events", "deliver"),
        ("ticket_events", "signed-0"),
        ("ticket_events", "signed-1"),
        ("shared_versions", "faq-push"),
        ("shared_versions", "faq-0"),
        ("shared_versions", "charter"),
    ] {
        let bytes =
            std::fs::read(fuzz_dir().join("seeds").join(target).join(file)).expect("seed present");
        let verdicts = urpnet_node::fuzz::verdicts(target, &bytes);
        assert!(!verdicts.is_empty(), "{target}/{file}: nothing verified");
        for v in verdicts {
            assert!(v.is_ok(), "{target}/{file}: {v:?}");
        }
    }
}
