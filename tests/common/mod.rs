//! Paths shared by the replay and tcpdump suites.

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
