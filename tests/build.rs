//! `qemu-ubpf build`: C filters built for the BPF target with only clang.
//! The RFC's sample filter (`<arpa/inet.h>`, `ntohl`) builds from
//! qemu-ubpf's headers and clang's alone (clang's own list of the headers
//! it read shows no system header, so glibc's and its i386 multilib's are
//! not needed) and drops what the example filter drops; qemu-ubpf's
//! network headers agree with the kernel's in either order; a libbpf
//! program builds with the system's libbpf headers and keeps its maps;
//! clang's diagnostics and exit status come through; a missing clang names
//! the package to install.
//!
//! Clang is needed except for the last test: without it each test is
//! skipped with a note, and under CI it fails.

mod common;
use common::{example, missing_prerequisite, root, sample, scratch_dir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qemu_ubpf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).args(args).current_dir(root()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Whether clang runs; if not, the test is skipped (or fails under CI).
fn have_clang() -> bool {
    let found = Command::new("clang").arg("--version").output().is_ok_and(|output| output.status.success());
    if !found {
        missing_prerequisite("a qemu-ubpf build test: clang is not installed (apt-get install clang)");
    }
    found
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/build").join(name)
}

/// Runs `qemu-ubpf build SOURCE -o OBJECT EXTRA...`, which must succeed.
fn build(source: &Path, object: &Path, extra: &[&str]) -> Output {
    let output = qemu_ubpf(&[&["build", path(source), "-o", path(object)], extra].concat());
    assert!(output.status.success(), "qemu-ubpf build {}:\n{}", source.display(), text(&output.stderr));
    output
}

/// The headers clang read, as `-H` lists them on stderr (`. path`, one dot
/// per level of nesting). Unlike a dependency file, which also names the
/// files that `__has_include_next` only looked up, these were opened.
fn headers_read(stderr: &str) -> Vec<PathBuf> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix('.'))
        .map(|rest| PathBuf::from(rest.trim_start_matches('.').trim()))
        .collect()
}

fn clang_resource_dir() -> PathBuf {
    let output = Command::new("clang").arg("-print-resource-dir").output().unwrap();
    PathBuf::from(text(&output.stdout).trim())
}

#[test]
fn the_rfc_filter_builds_from_shipped_and_clang_headers_only() {
    if !have_clang() {
        return;
    }
    let dir = scratch_dir("build", "rfc");
    let object = dir.join("rfc_filter.o");
    let output = build(&fixture("rfc_filter.c"), &object, &["-H", "-Wall", "-Wextra", "-Werror"]);
    let headers = headers_read(&text(&output.stderr));
    let shipped = root().join("include/bpf-target");
    let clang_own = clang_resource_dir();
    assert!(headers.iter().any(|h| h.ends_with("arpa/inet.h") && h.starts_with(&shipped)), "{headers:?}");
    for header in &headers {
        assert!(
            header.starts_with(&shipped) || header.starts_with(&clang_own),
            "{} is neither qemu-ubpf's nor clang's own: the build would need the system's C headers",
            header.display()
        );
    }

    // It drops exactly what the bundled example filter drops.
    let capture = sample("ethernet.pcap");
    let reference = dir.join("reference-drop.pcap");
    let built = dir.join("built-drop.pcap");
    for (program, drops) in [(example("drop_1_1_1_1"), &reference), (object.clone(), &built)] {
        let output = qemu_ubpf(&["replay", path(&program), path(&capture), "--drop", path(drops)]);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let dropped = std::fs::read(&built).unwrap();
    assert_eq!(dropped, std::fs::read(&reference).unwrap(), "the built RFC filter drops other packets");
    assert!(dropped.len() > 24, "the capture has packets to 1.1.1.1");
}

#[test]
fn shipped_network_headers_agree_with_the_kernels_in_either_order() {
    if !have_clang() {
        return;
    }
    if !Path::new("/usr/include/linux/in.h").is_file() {
        missing_prerequisite(
            "the kernel's headers: /usr/include/linux/in.h is missing (apt-get install linux-libc-dev)",
        );
        return;
    }
    let dir = scratch_dir("build", "headers");
    for source in ["net_headers.c", "kernel_headers_first.c"] {
        build(&fixture(source), &dir.join(source.replace(".c", ".o")), &["-Wall", "-Wextra", "-Werror"]);
    }
}

#[test]
fn a_libbpf_program_builds_with_the_systems_libbpf_headers() {
    if !have_clang() {
        return;
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").is_file() {
        missing_prerequisite(
            "libbpf's headers: /usr/include/bpf/bpf_helpers.h is missing (apt-get install libbpf-dev)",
        );
        return;
    }
    let dir = scratch_dir("build", "libbpf");
    let object = dir.join("proto_counters.o");
    build(&root().join("examples/proto_counters.c"), &object, &["-Wall", "-Werror"]);
    // Its BTF-defined map loads, and counts what the committed object counts.
    let capture = sample("ethernet.pcap");
    let maps = |program: &Path| {
        let output = qemu_ubpf(&["replay", path(program), path(&capture), "--json", "--maps"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        summary["maps"].clone()
    };
    let built = maps(&object);
    assert!(built.as_array().is_some_and(|maps| !maps.is_empty()), "{built}");
    assert_eq!(built, maps(&example("proto_counters")));
}

#[test]
fn clangs_diagnostics_and_status_come_through() {
    if !have_clang() {
        return;
    }
    let dir = scratch_dir("build", "diagnostics");
    let source = dir.join("broken.c");
    std::fs::write(&source, "int filter(void *p, unsigned long n)\n{\n    return undeclared;\n}\n").unwrap();
    let object = dir.join("broken.o");
    let output = qemu_ubpf(&["build", path(&source), "-o", path(&object)]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("broken.c:3:12: error: use of undeclared identifier 'undeclared'"), "{stderr}");
    assert!(!stderr.contains("qemu-ubpf:"), "clang's words only: {stderr}");
    assert!(!object.exists());
}

#[test]
fn a_missing_clang_names_the_package() {
    let dir = scratch_dir("build", "no-clang");
    let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf"))
        .args(["build", path(&fixture("rfc_filter.c")), "-o", path(&dir.join("x.o"))])
        .env("CLANG", dir.join("no-such-clang"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("needs clang (on Debian: apt-get install clang)"), "{stderr}");
}
