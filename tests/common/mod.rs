//! Paths shared by the replay, tcpdump and build suites.

use std::io::Write;
use std::path::{Path, PathBuf};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A committed sample capture.
pub fn sample(name: &str) -> PathBuf {
    root().join("examples/captures").join(name)
}

/// A committed example filter object.
pub fn example(name: &str) -> PathBuf {
    root().join("examples").join(format!("{name}.o"))
}

/// A fresh directory for one test's files.
pub fn scratch_dir(suite: &str, test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(suite).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Is `all` the elements of `a` and `b` merged, each in its own order?
#[allow(dead_code)] // the build suite merges no outputs
pub fn is_interleaving<T: PartialEq>(all: &[T], a: &[T], b: &[T]) -> bool {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    all.iter().all(|item| {
        if a.peek() == Some(&item) {
            a.next();
            true
        } else if b.peek() == Some(&item) {
            b.next();
            true
        } else {
            false
        }
    }) && a.peek().is_none()
        && b.peek().is_none()
}

/// A test's prerequisite (`what`) is missing: under CI, which must provide
/// it, the test fails; elsewhere it is skipped with a note on stderr.
#[allow(dead_code)] // the replay suite has no prerequisite
pub fn missing_prerequisite(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what}; CI must provide it");
    }
    // Straight to stderr, past the test harness's capture, so the skip shows.
    let _ = writeln!(std::io::stderr(), "note: skipping {what}");
}
