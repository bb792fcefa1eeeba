//! The linearizability checker against Porcupine's histories with known verdicts, read in place
//! from `../shared/testdata/porcupine/` (see NOTES.md there): 102 Jepsen etcd logs (one
//! register) and 6 kv histories (string registers partitioned by key).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_jepsen::import::{parse_edn_lines, parse_jepsen_log};
use berth_jepsen::models::{KvRegister, Register};
use berth_jepsen::{check_history, CheckOptions, History, Verdict};

const EXPECTED_HISTORIES: usize = 108;
/// Generous, so a loaded machine does not fail the test; the printed timings are the real check.
const MAX_PER_HISTORY: Duration = Duration::from_secs(5);

fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/porcupine");
    assert!(
        dir.join("EXPECTED.tsv").is_file(),
        "Porcupine test data not found at {}: the checker cannot be verified without it \
         (expected ../shared/testdata/porcupine/EXPECTED.tsv next to the workspace)",
        dir.display()
    );
    dir
}

struct Case {
    file: String,
    model: String,
    expected_ok: bool,
}

fn cases(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("read EXPECTED.tsv");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    assert_eq!(
        lines.next().map(str::trim),
        Some("file\tmodel\texpected_ok"),
        "EXPECTED.tsv header"
    );
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "EXPECTED.tsv line {line:?}");
            let expected_ok = match fields[2].trim() {
                "true" => true,
                "false" => false,
                other => panic!("EXPECTED.tsv: bad verdict {other:?}"),
            };
            Case {
                file: fields[0].into(),
                model: fields[1].into(),
                expected_ok,
            }
        })
        .collect()
}

fn options(threads: usize) -> CheckOptions {
    CheckOptions {
        threads,
        time_limit: Some(Duration::from_secs(20)),
        ..CheckOptions::default()
    }
}

fn check_case(dir: &Path, case: &Case, options: &CheckOptions) -> Verdict {
    let text = std::fs::read_to_string(dir.join(&case.file)).unwrap_or_else(|e| panic!("{}: {e}", case.file));
    let parse = |r: Result<History, _>| r.unwrap_or_else(|e| panic!("{}: {e}", case.file));
    match case.model.as_str() {
        "etcd_register" => check_history(&Register, &parse(parse_jepsen_log(&text)), options),
        "kv_append" => check_history(&KvRegister, &parse(parse_edn_lines(&text)), options),
        other => panic!("{}: unknown model {other}", case.file),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", case.file))
}

#[test]
fn every_porcupine_history_gets_its_known_verdict() {
    check_all(1);
}

#[test]
fn the_parallel_search_agrees_on_every_history() {
    check_all(4);
}

fn check_all(threads: usize) {
    let dir = data_dir();
    let cases = cases(&dir);
    assert_eq!(
        cases.len(),
        EXPECTED_HISTORIES,
        "histories listed in EXPECTED.tsv"
    );
    let mut timings = Vec::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let started = Instant::now();
        let verdict = check_case(&dir, case, &options(threads));
        let elapsed = started.elapsed();
        let good = match verdict {
            Verdict::Ok => case.expected_ok,
            Verdict::Illegal(_) => !case.expected_ok,
            Verdict::Unknown { .. } => false,
        };
        if !good || elapsed > MAX_PER_HISTORY {
            wrong.push(format!(
                "{}: expected ok={} in < {MAX_PER_HISTORY:?}, got {verdict:?} in {elapsed:?}",
                case.file, case.expected_ok
            ));
        }
        timings.push((elapsed, case.file.clone()));
    }
    timings.sort();
    let total: Duration = timings.iter().map(|(t, _)| *t).sum();
    println!(
        "checked {} histories with {threads} thread(s) in {total:?}; slowest:",
        timings.len()
    );
    for (elapsed, file) in timings.iter().rev().take(5) {
        println!("  {elapsed:>12.3?}  {file}");
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

/// Some partitions of c50-bad are very expensive to refute and one is cheap: interleaving the
/// partitions finds the cheap refutation within a small budget, where searching them one after
/// the other would not.
#[test]
fn interleaving_refutes_c50_bad_within_a_small_budget() {
    let dir = data_dir();
    let text = std::fs::read_to_string(dir.join("test_data/kv/c50-bad.txt")).expect("read c50-bad");
    let history = parse_edn_lines(&text).expect("parse c50-bad");
    let budget = CheckOptions {
        max_steps: Some(1_000_000),
        time_limit: None,
        ..CheckOptions::default()
    };
    let verdict = check_history(&KvRegister, &history, &budget).expect("check c50-bad");
    let Verdict::Illegal(counterexample) = verdict else {
        panic!("expected a refutation within the budget, got {verdict:?}");
    };
    println!("{counterexample}");
    let one_at_a_time = CheckOptions {
        slice_steps: 1_000_000,
        ..budget
    };
    assert!(check_history(&KvRegister, &history, &one_at_a_time)
        .unwrap()
        .is_unknown());
}
