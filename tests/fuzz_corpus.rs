//! The fuzz corpus (fuzz/corpus/<target>/, grown by cargo-fuzz with libFuzzer on nightly and
//! kept in the repository) replayed on stable through the same target bodies
//! (`hotline::fuzz`): every input that once found new code, or a crash since fixed, must go
//! through without a panic.
use std::path::PathBuf;

#[test]
fn every_stored_fuzz_input_goes_through_its_target_without_a_panic() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, target) in hotline::fuzz::TARGETS {
        let dir = corpus.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {name}");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            target(&data);
        }
        eprintln!("{name}: {} inputs", files.len());
        total += files.len();
    }
    assert!(total >= hotline::fuzz::TARGETS.len());
}
