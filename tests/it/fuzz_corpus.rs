//! Replays every saved fuzz input (`fuzz/corpus/<target>/*` and the crashes kept as
//! regressions in `fuzz/regressions/<target>/*`) through the same checks the fuzz targets run
//! (`millwatch::fuzzing`), so that the normal suite covers them without cargo-fuzz.

use std::path::{Path, PathBuf};

use millwatch::fuzzing::{TARGETS, check};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs `target`'s check over every file in `fuzz/<kind>/<target>/`; returns how many.
fn replay(kind: &str, target: &str) -> usize {
    let Some(run) = check(target) else {
        panic!("no check called {target}");
    };
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{} fails its check", path.display());
        }
        n += 1;
    }
    n
}

#[test]
fn every_corpus_file_passes_its_target_check() {
    for (target, _) in TARGETS {
        let n = replay("corpus", target);
        assert!(n > 0, "fuzz/corpus/{target} is empty or missing");
    }
}

#[test]
fn every_saved_crash_passes_its_target_check() {
    for (target, _) in TARGETS {
        replay("regressions", target);
    }
}

#[test]
fn every_fuzz_target_has_a_check_and_a_corpus_folder() {
    let targets = fuzz_dir().join("fuzz_targets");
    for (target, _) in TARGETS {
        assert!(
            targets.join(format!("{target}.rs")).is_file(),
            "fuzz/fuzz_targets/{target}.rs missing"
        );
    }
    let files = std::fs::read_dir(&targets).unwrap().count();
    assert_eq!(files, TARGETS.len(), "a target without a check in TARGETS");
}

// Crashes the fuzz targets found, each with the fix it led to.

/// `reading_diff`: the fast path read `-0` as the integer 0 while the serde path (taken,
/// for instance, when another key has an escape) reads it as -0.0, so the same value came out
/// differently depending on the rest of the object.
#[test]
fn minus_zero_is_the_same_on_both_paths() {
    use millwatch::reading::{Value, parse_reading};
    for text in [
        r#"{"s": -0}"#,
        r#"{"s": -0, "\u0061": 1}"#,
        r#"{"s": -0.0}"#,
    ] {
        let r = parse_reading(text.as_bytes()).unwrap();
        match r.fields[0].value {
            Value::Number(v) => assert_eq!(v.to_bits(), (-0.0f64).to_bits(), "{text}"),
            ref other => panic!("{text}: {other:?}"),
        }
    }
}

/// `ndjson`: after blank lines, an NDJSON reading's position named the first blank line
/// instead of the line the reading is on.
#[test]
fn ndjson_positions_skip_blank_lines() {
    let got =
        millwatch::reading::parse_all(b"{\"a\": 1}\n\n\n{\"b\": 2}\n  \n{\"c\"\n: 3}\n\n{bad\n");
    let lines: Vec<Option<u64>> = got.iter().map(|(p, _)| p.line).collect();
    assert_eq!(lines, [Some(1), Some(4), Some(6), Some(9)]);
    assert!(got[..3].iter().all(|(_, r)| r.is_ok()));
    assert!(got[3].1.is_err());
}
