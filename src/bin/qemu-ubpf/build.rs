//! `qemu-ubpf build`: a C filter compiled into a BPF object by clang, with
//! the flags and include paths a filter needs, so that nobody has to know
//! them.
//!
//! A BPF program has no C library, and glibc's headers do not compile for
//! the BPF target on a 64-bit Debian without its i386 multilib
//! (`libc6-dev-i386`): `bits/wordsize.h` takes the target for 32-bit and
//! `gnu/stubs.h` then wants `gnu/stubs-32.h`. So clang compiles freestanding
//! and without the system's C headers (`-ffreestanding -nostdlibinc`):
//! `<stdint.h>`, `<stddef.h>`, `<stdbool.h>` and `<limits.h>` are clang's
//! own, and the network headers a filter uses (`<arpa/inet.h>`,
//! `<netinet/in.h>`, `<endian.h>`) come from the set qemu-ubpf ships
//! (`include/bpf-target/`), searched first. The system's directories follow
//! after clang's, so that libbpf's and the kernel's headers (`<bpf/...>`,
//! `<linux/...>`, and `<asm/...>` from the multiarch directory) are found
//! as libbpf programs expect.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Where an installation keeps the headers, relative to the prefix the
/// command runs from (`PREFIX/bin/qemu-ubpf`).
const INSTALLED_HEADERS: &str = "share/qemu-ubpf/include";
/// The source tree's copy, for a command run from the tree it was built in.
const SOURCE_HEADERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/bpf-target");
/// A file every copy of the headers has.
const MARKER: &str = "arpa/inet.h";

/// The flags before the caller's, who may override any of them (a later
/// `-O`, `-mcpu` or `-g0` wins). `-g` emits BTF, which libbpf's map
/// definitions (`SEC(".maps")`) need; cpu v3 has 32-bit jumps and ALU,
/// which both of qemu-ubpf's engines run.
const FLAGS: &[&str] = &["-target", "bpf", "-O2", "-g", "-mcpu=v3", "-ffreestanding", "-nostdlibinc"];

/// Compiles `source` into the BPF object `output`, passing `clang_args` on
/// to clang after the command's own flags. Clang's diagnostics reach the
/// terminal as clang prints them; its exit status is the command's.
pub fn build(source: &Path, output: &Path, clang_args: &[OsString]) -> Result<ExitCode, String> {
    let clang = std::env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let headers = header_dir()?;
    let mut command = Command::new(&clang);
    command.args(FLAGS).arg("-isystem").arg(&headers);
    for dir in system_include_dirs(&clang) {
        command.arg("-idirafter").arg(dir);
    }
    command.arg("-c").arg(source).arg("-o").arg(output).args(clang_args);
    let status = command.status().map_err(|e| match e.kind() {
        ErrorKind::NotFound => format!(
            "{} not found: building a C filter needs clang (on Debian: apt-get install clang)",
            Path::new(&clang).display()
        ),
        _ => format!("cannot run {}: {e}", Path::new(&clang).display()),
    })?;
    // A signal's death is a failure too.
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// The headers beside an installed command, or else the source tree's.
fn header_dir() -> Result<PathBuf, String> {
    let installed = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.join(INSTALLED_HEADERS)));
    let candidates: Vec<PathBuf> = installed.into_iter().chain([PathBuf::from(SOURCE_HEADERS)]).collect();
    candidates.iter().find(|dir| dir.join(MARKER).is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|dir| dir.display().to_string()).collect();
        format!(
            "the headers for BPF programs are missing (looked in {}): install them with \
             scripts/install.sh --command",
            looked.join(" and ")
        )
    })
}

/// The system's header directories that exist, in the order a native
/// build searches them: local, multiarch (the kernel's `<asm/...>`), then
/// `/usr/include`. Clang does not search the multiarch directory for the
/// BPF target; Debian's clang names it with `-print-multiarch`.
fn system_include_dirs(clang: &OsString) -> Vec<PathBuf> {
    let multiarch = Command::new(clang)
        .arg("-print-multiarch")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|name| !name.is_empty());
    let mut dirs = vec![PathBuf::from("/usr/local/include")];
    dirs.extend(multiarch.map(|name| Path::new("/usr/include").join(name)));
    dirs.push(PathBuf::from("/usr/include"));
    dirs.into_iter().filter(|dir| dir.is_dir()).collect()
}
