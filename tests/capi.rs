//! The C API (`src/capi/`) as C programs see it: the committed header is
//! what cbindgen generates; it compiles as C99 and as C++; and the C
//! programs in `tests/c/` build through pkg-config against the library as
//! `scripts/install.sh` installs it, then run: QEMU's filter-ubpf call
//! sequence on the example filters (interpreter and JIT), the error paths,
//! four threads sharing one program, the maps of libbpf filters read and
//! written from the host, XDP programs against the kernel's recorded
//! answers, and the lot again under valgrind.
//!
//! The library installed is the one `cargo test` has just built (beside
//! this test binary, in `target/PROFILE/deps`), so no second build happens.
//! `QEMU_UBPF_BLESS=1 cargo test --test capi header` rewrites the header.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The header as cbindgen generates it now from `src/capi/` (it follows the
/// `mod` items of `mod.rs`).
fn generated_header() -> String {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root().join("src/capi/mod.rs"))
        .generate()
        .expect("cbindgen reads src/capi/");
    let mut header = Vec::new();
    bindings.write(&mut header);
    String::from_utf8(header).expect("the header is UTF-8")
}

#[test]
fn header_is_generated_from_the_capi_module() {
    let path = root().join("include/ubpf.h");
    let fresh = generated_header();
    if std::env::var_os("QEMU_UBPF_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("include/ubpf.h is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(fresh.lines().count()));
        panic!(
            "include/ubpf.h differs from what cbindgen generates from src/capi/ (first at line {}); \
             run `QEMU_UBPF_BLESS=1 cargo test --test capi header` and commit the result",
            line + 1
        );
    }
}

/// The library installed into a temporary prefix, and the C tests built
/// against it; built once for all the tests of this file.
struct Installed {
    prefix: PathBuf,
    libdir: PathBuf,
    /// `pkg-config --cflags --libs qemu-ubpf`, split.
    flags: Vec<String>,
    /// The compiled C tests, by name.
    bin: PathBuf,
}

/// The directory of this test binary, `target/PROFILE/deps`, where
/// `cargo test` has just built `libqemu_ubpf.so` and `libqemu_ubpf.a` (it
/// does not copy them up to `target/PROFILE`, which may hold older ones).
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent().expect("tests live in target/PROFILE/deps").to_path_buf()
}

/// Runs `command`, shows its output, and fails the test unless it succeeds.
fn run(command: &mut Command) -> Output {
    let output = run_quietly(command);
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?} failed ({})", output.status);
    output
}

/// Runs `command` and returns its output, whatever its exit status.
/// The C compiler `name` (gcc, g++) for the architecture these tests were
/// built for: on another host, under qemu-user, Debian's cross compiler
/// (`aarch64-linux-gnu-gcc`), whose programs run there too (binfmt_misc).
fn c_compiler(name: &str) -> String {
    let machine = run_quietly(Command::new(name).arg("-dumpmachine"));
    if String::from_utf8_lossy(&machine.stdout).starts_with(std::env::consts::ARCH) {
        name.to_owned()
    } else {
        format!("{}-linux-gnu-{name}", std::env::consts::ARCH)
    }
}

fn run_quietly(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| {
        panic!(
            "cannot run {:?}: {error}; the C API tests need gcc, g++, pkg-config and binutils \
             (apt-get install gcc g++ pkg-config binutils; valgrind too for the valgrind test)",
            command.get_program()
        )
    })
}

/// A fresh directory for this process under `target/tmp`; the ones left by
/// earlier runs whose process is gone are removed (several `cargo test` may
/// run at once on a shared machine).
fn work_dir(profile: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let prefix = format!("capi-{profile}-");
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(&prefix) {
            if Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let work = tmp.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("the target directory is writable");
    work
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let artifacts = deps_dir();
        let profile = artifacts.parent().and_then(Path::file_name).and_then(|name| name.to_str()).unwrap_or("profile");
        let work = work_dir(profile);
        let prefix = work.join("prefix");
        run(Command::new(root().join("scripts/install.sh"))
            .arg("--prefix")
            .arg(&prefix)
            .arg("--artifacts")
            .arg(&artifacts));

        let libdir = prefix.join("lib");
        let pkg_config = run(Command::new("pkg-config")
            .args(["--cflags", "--libs", "qemu-ubpf"])
            .env("PKG_CONFIG_PATH", libdir.join("pkgconfig")));
        let flags: Vec<String> =
            String::from_utf8_lossy(&pkg_config.stdout).split_whitespace().map(str::to_owned).collect();
        assert!(flags.iter().any(|flag| flag == "-lqemu-ubpf"), "{flags:?}");

        let bin = work.join("bin");
        std::fs::create_dir_all(&bin).expect("the target directory is writable");
        for name in ["qemu_rfc", "errors", "threads", "ubpf_api", "maps", "filter_expr", "flood", "xdp"] {
            run(Command::new(c_compiler("gcc"))
                .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-g", "-pthread"])
                .arg(root().join("tests/c").join(format!("{name}.c")))
                .args(&flags)
                .arg(format!("-Wl,-rpath,{}", libdir.display()))
                .arg("-o")
                .arg(bin.join(name)));
        }
        Installed { prefix, libdir, flags, bin }
    })
}

/// Runs C test `name` with the repository root and `args`, under `wrapper`
/// (e.g. valgrind) when given; returns its standard output.
fn run_c_test(wrapper: &[&str], name: &str, args: &[&str]) -> String {
    let installed = installed();
    let mut command = match wrapper {
        [program, rest @ ..] => {
            let mut command = Command::new(program);
            command.args(rest).arg(installed.bin.join(name));
            command
        }
        [] => Command::new(installed.bin.join(name)),
    };
    let output = run(command.arg(root()).args(args));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn header_compiles_as_c99_and_as_cxx() {
    let installed = installed();
    let out = installed.bin.join("header-c");
    run(Command::new(c_compiler("gcc"))
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(root().join("tests/c/header.c"))
        .args(&installed.flags)
        .arg(format!("-Wl,-rpath,{}", installed.libdir.display()))
        .arg("-o")
        .arg(&out));
    run(&mut Command::new(&out));
    let out = installed.bin.join("header-cxx");
    run(Command::new(c_compiler("g++"))
        .args(["-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(root().join("tests/c/header.c"))
        .args(["-x", "none"])
        .args(&installed.flags)
        .arg(format!("-Wl,-rpath,{}", installed.libdir.display()))
        .arg("-o")
        .arg(&out));
    run(&mut Command::new(&out));
}

#[test]
fn installed_library_is_shaped_as_distributions_ship_it() {
    let installed = installed();
    let link =
        |name: &str| std::fs::read_link(installed.libdir.join(name)).unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_eq!(link("libqemu-ubpf.so"), Path::new("libqemu-ubpf.so.0"));
    assert_eq!(link("libqemu-ubpf.so.0"), Path::new(&format!("libqemu-ubpf.so.{}", env!("CARGO_PKG_VERSION"))));
    assert!(installed.libdir.join("libqemu-ubpf.a").is_file());
    assert!(installed.prefix.join("include/qemu-ubpf/ubpf.h").is_file());
    let library = installed.libdir.join("libqemu-ubpf.so.0");

    let dynamic = run_quietly(Command::new("readelf").arg("-d").arg(&library));
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(dynamic.contains("Library soname: [libqemu-ubpf.so.0]"), "{dynamic}");
    // libpcap is loaded on first use by ubpf_load_filter_expr, not linked.
    assert!(!dynamic.contains("libpcap"), "{dynamic}");

    let symbols = run_quietly(Command::new("nm").args(["-D", "--defined-only"]).arg(&library));
    let names: Vec<String> = String::from_utf8_lossy(&symbols.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(str::to_owned)
        .collect();
    let foreign: Vec<&String> = names.iter().filter(|name| !name.starts_with("ubpf_")).collect();
    assert!(foreign.is_empty(), "exported besides ubpf_*: {foreign:?}");
    for name in [
        "ubpf_create",
        "ubpf_destroy",
        "ubpf_register",
        "ubpf_load",
        "ubpf_load_elf",
        "ubpf_load_elf_ex",
        "ubpf_exec",
        "ubpf_compile",
    ] {
        assert!(names.iter().any(|exported| exported == name), "{name} is not exported");
    }
}

#[test]
fn qemu_rfc_call_sequence_on_the_example_filters() {
    let stdout = run_c_test(&[], "qemu_rfc", &[]);
    assert!(stdout.contains("qemu_rfc:") && stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn error_paths_fail_with_a_message() {
    let stdout = run_c_test(&[], "errors", &[]);
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn ubpf_api_client_gets_ubpf_results() {
    let stdout = run_c_test(&[], "ubpf_api", &[]);
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn maps_of_libbpf_filters_through_the_c_api() {
    let stdout = run_c_test(&[], "maps", &[]);
    assert!(stdout.contains("maps:") && stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn tcpdump_expressions_through_the_c_api() {
    let stdout = run_c_test(&[], "filter_expr", &[]);
    assert!(stdout.contains("filter_expr:") && stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn four_threads_run_one_program() {
    let stdout = run_c_test(&[], "threads", &["2"]);
    assert!(stdout.contains(" 0 wrong verdicts") && stdout.contains(" 0 failed"), "{stdout}");
}

/// 20,000 faulting runs with the default printer write 8 lines on stderr;
/// an embedder's printer gets all 20,000 messages.
#[test]
fn faults_do_not_flood_stderr() {
    let stdout = run_c_test(&[], "flood", &[]);
    assert!(stdout.contains("flood:") && stdout.contains(" 0 failed"), "{stdout}");
}

/// The kernel's recorded XDP runs (`tests/kernel/xdp.json`) with the
/// contexts the C API gives (metadata, interfaces; one buffer), as lines of
/// `tests/c/xdp.c`'s cases file, written to `path`; returns how many. The
/// objects: the committed ones, and Debian's xdp-filter, `xdp_pass.o` and
/// `xdp_drop.o` where installed as recorded (`tests/xdp.rs` fails when they
/// are not), each with its maps filled as recorded.
fn write_xdp_cases(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(root().join("tests/kernel/xdp.json")).expect("tests/kernel/xdp.json");
    let record: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let (frames, contexts) = (&record["frames"], &record["contexts"]);
    let mut objects = std::collections::HashMap::new();
    let mut missing = Vec::new();
    for object in record["objects"].as_array().expect("objects") {
        let name = object["object"].as_str().unwrap();
        let debian = ["/xdpfilt_", "/xdp_pass.o", "/xdp_drop.o"].iter().any(|part| name.contains(part));
        if !(name.starts_with("tests/fixtures/") || debian) {
            continue;
        }
        let path = root().join(name);
        let sha = Command::new("sha256sum").arg(&path).output().ok().map(|out| out.stdout);
        if !sha.is_some_and(|sha| sha.starts_with(object["sha256"].as_str().unwrap().as_bytes())) {
            missing.push(name.to_owned());
            continue;
        }
        let maps: Vec<String> = object["map_setup"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                format!("{}={}:{}", entry["map"].as_str().unwrap(), entry["key"], entry["value"]).replace('"', "")
            })
            .collect();
        objects.insert(name, if maps.is_empty() { "-".to_owned() } else { maps.join(",") });
    }
    let mut lines = String::new();
    let mut count = 0;
    for run in record["runs"].as_array().expect("runs") {
        let (object, program) = (run["object"].as_str().unwrap(), run["program"].as_str().unwrap());
        let Some(maps) = objects.get(object) else { continue };
        let context = &contexts[run["ctx"].as_str().unwrap()];
        let ctx_in = &context["ctx_in"];
        let meta = context["meta"].as_str().unwrap();
        let frame = frames[run["frame"].as_str().unwrap()].as_str().unwrap();
        let plain_context = ctx_in.is_object()
            && ctx_in["data"].as_u64() == Some(meta.len() as u64 / 2)
            && ctx_in["data_end"].is_null()
            && ctx_in["data_meta"] == 0
            && ctx_in["egress_ifindex"] == 0;
        // A frame past 3520 bytes would be multi-buffer.
        if !plain_context || run.get("error").is_some() || (frame.len() + meta.len()) / 2 > 3520 {
            continue;
        }
        let ctx_out = &run["ctx_out"];
        let meta_out = ctx_out["data"].as_u64().unwrap() - ctx_out["data_meta"].as_u64().unwrap();
        // Some objects load as XDP by their section, the others forced.
        let kind = if object.contains("adjust") || object.contains("xdpfilt_a") { "section" } else { "xdp" };
        let or_dash = |hex: &str| if hex.is_empty() { "-".to_owned() } else { hex.to_owned() };
        lines += &format!(
            "{object} {program} {kind} {maps} {} {} {} {frame} {} {meta_out} {}\n",
            or_dash(meta),
            // test_run runs on the loopback (1) when told no device (0).
            ctx_in["ingress_ifindex"].as_u64().unwrap().max(1),
            ctx_in["rx_queue_index"],
            run["retval"],
            run["data_out"].as_str().map_or("?".to_owned(), or_dash),
        );
        count += 1;
    }
    std::fs::write(path, lines).expect("the target directory is writable");
    (count, missing)
}

/// Runs `tests/c/xdp.c` over the kernel's recorded runs, under `wrapper`.
fn run_xdp_cases(wrapper: &[&str]) -> String {
    let cases = installed().bin.join("xdp-cases.txt");
    let (count, missing) = write_xdp_cases(&cases);
    if !missing.is_empty() {
        println!("not installed as recorded, so not run (tests/xdp.rs fails for them): {missing:?}");
    }
    assert!(count > 300, "only {count} recorded runs");
    let stdout = run_c_test(wrapper, "xdp", &[cases.to_str().unwrap()]);
    assert!(stdout.contains(&format!("xdp: {count} runs,")) && stdout.contains(" 0 failed"), "{stdout}");
    stdout
}

/// XDP programs through ubpf_exec_xdp() and through ubpf_compile()'s
/// function give the kernel's actions and bytes.
#[test]
fn xdp_programs_through_the_c_api_as_the_kernel_runs_them() {
    run_xdp_cases(&[]);
}

#[test]
fn valgrind_finds_no_errors_and_no_leaks() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("valgrind is not installed: skipping the valgrind runs of the C tests (.ci/run installs it)");
        return;
    }
    if c_compiler("gcc") != "gcc" {
        println!("the C tests are built for another architecture, which valgrind cannot run: skipping its runs");
        return;
    }
    let valgrind = [
        "valgrind",
        "--quiet",
        "--error-exitcode=99",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect,possible",
        "--errors-for-leak-kinds=definite,indirect,possible",
    ];
    let runs = [
        ("qemu_rfc", &[][..]),
        ("errors", &[]),
        ("ubpf_api", &[]),
        ("threads", &["0.3"][..]),
        ("maps", &[]),
        ("filter_expr", &[]),
    ];
    for (name, args) in runs {
        let stdout = run_c_test(&valgrind, name, args);
        assert!(stdout.contains(" 0 failed"), "{name} under valgrind: {stdout}");
    }
    run_xdp_cases(&valgrind);
}

/// ubpf_load_cbpf: a classic program (`tcpdump -dd ip`) loads, runs, and
/// gives the classic verdicts; one the kernel would refuse fails with its
/// reason.
#[test]
fn classic_bpf_loads_through_the_c_api() {
    use qemu_ubpf::capi::vm::{ubpf_create, ubpf_destroy, ubpf_exec, ubpf_load_cbpf};
    use std::ffi::{CStr, c_char};
    // ldh [12]; jeq #0x800 jt 0 jf 1; ret #262144; ret #0, as struct sock_filter.
    let classic: [(u16, u8, u8, u32); 4] =
        [(0x28, 0, 0, 12), (0x15, 0, 1, 0x800), (0x06, 0, 0, 262144), (0x06, 0, 0, 0)];
    let encode = |insns: &[(u16, u8, u8, u32)]| -> Vec<u8> {
        insns
            .iter()
            .flat_map(|&(code, jt, jf, k)| [&code.to_ne_bytes()[..], &[jt, jf], &k.to_ne_bytes()].concat())
            .collect()
    };
    let code = encode(&classic);
    let vm = ubpf_create();
    let mut errmsg: *mut c_char = std::ptr::null_mut();
    // SAFETY: a live VM, 4 instructions of 8 bytes, a writable errmsg.
    assert_eq!(unsafe { ubpf_load_cbpf(vm, code.as_ptr().cast(), 4, &mut errmsg) }, 0);
    let run = |frame: &mut [u8]| {
        let mut result = u64::MAX;
        // SAFETY: a live VM with a program, a writable frame and result.
        assert_eq!(unsafe { ubpf_exec(vm, frame.as_mut_ptr().cast(), frame.len(), &mut result) }, 0);
        result
    };
    let mut frame = [0u8; 20];
    frame[12] = 0x08;
    assert_eq!(run(&mut frame), 262144);
    frame[12] = 0x86;
    assert_eq!(run(&mut frame), 0);
    assert_eq!(run(&mut frame[..13]), 0, "a load past the end returns 0");
    // SAFETY: the VM is not used after this.
    unsafe { ubpf_destroy(vm) };

    // div #0 is refused, as the kernel refuses it.
    let vm = ubpf_create();
    let code = encode(&[(0x34, 0, 0, 0), (0x16, 0, 0, 0)]);
    // SAFETY: as above.
    assert_eq!(unsafe { ubpf_load_cbpf(vm, code.as_ptr().cast(), 2, &mut errmsg) }, -1);
    // SAFETY: on failure errmsg holds a NUL-terminated message from malloc.
    let message = unsafe { CStr::from_ptr(errmsg) }.to_string_lossy().into_owned();
    assert!(message.contains("division or modulo by the constant 0"), "{message}");
    // SAFETY: the message came from malloc; the VM is not used after this.
    unsafe {
        libc_free(errmsg.cast());
        ubpf_destroy(vm);
    }
}

unsafe extern "C" {
    #[link_name = "free"]
    fn libc_free(pointer: *mut std::ffi::c_void);
}

/// Per-CPU and redirect maps from the host: a per-CPU value is every
/// possible CPU's, each padded to 8 bytes (ubpf_map_value_size() bytes);
/// a devmap holds ifindexes; an xskmap cannot be filled here.
#[test]
fn per_cpu_and_redirect_maps_through_the_c_api() {
    use qemu_ubpf::capi::maps::{
        ubpf_map_get, ubpf_map_lookup, ubpf_map_release, ubpf_map_update, ubpf_map_value_size, ubpf_maps_json,
    };
    use qemu_ubpf::capi::vm::{ubpf_create, ubpf_destroy, ubpf_load_elf_ex, ubpf_register_linux_helpers};
    use std::ffi::{CStr, CString, c_char};
    let cpus = qemu_ubpf::maps::cpus::count();
    let load = |object: &str, entry: &str| {
        let elf = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(object)).unwrap();
        let entry = CString::new(entry).unwrap();
        let vm = ubpf_create();
        let mut errmsg: *mut c_char = std::ptr::null_mut();
        // SAFETY: a live VM, the object's bytes, a NUL-terminated name, a
        // writable errmsg.
        unsafe {
            assert_eq!(ubpf_register_linux_helpers(vm), 0);
            let loaded = ubpf_load_elf_ex(vm, elf.as_ptr().cast(), elf.len(), entry.as_ptr(), &mut errmsg);
            assert!(errmsg.is_null(), "{object}: {}", CStr::from_ptr(errmsg).to_string_lossy());
            assert_eq!(loaded, 0);
        }
        vm
    };
    let vm = load("xdp_maps.o", "xdp_count");
    // SAFETY: a live VM with a program, NUL-terminated names, buffers of
    // the sizes passed; the handle is released and the VM destroyed last.
    unsafe {
        let counters = ubpf_map_get(vm, c"action_counters".as_ptr());
        assert!(!counters.is_null());
        assert_eq!(ubpf_map_value_size(counters), 16 * cpus);
        let key = 2u32.to_ne_bytes();
        let values: Vec<u8> = (0..cpus as u64 * 2).flat_map(|word| (word + 1).to_ne_bytes()).collect();
        let update =
            |value: &[u8]| ubpf_map_update(counters, key.as_ptr().cast(), 4, value.as_ptr().cast(), value.len(), 0);
        assert_eq!(update(&values), 0);
        assert_eq!(update(&values[..16]) == 0, cpus == 1, "one CPU's value is too short");
        let mut back = vec![0u8; values.len()];
        assert_eq!(ubpf_map_lookup(counters, key.as_ptr().cast(), 4, back.as_mut_ptr().cast(), back.len()), 0);
        assert_eq!(back, values);
        let json = ubpf_maps_json(vm);
        let dump: serde_json::Value = serde_json::from_str(&CStr::from_ptr(json).to_string_lossy()).unwrap();
        libc_free(json.cast());
        let map = dump["maps"].as_array().unwrap().iter().find(|map| map["name"] == "action_counters").unwrap();
        assert_eq!(map["entries"][0]["value"].as_array().unwrap().len(), cpus);
        ubpf_map_release(counters);
        ubpf_destroy(vm);
    }
    let vm = load("xdp_actions.o", "xdp_aborted");
    // SAFETY: as above.
    unsafe {
        let (tx_ports, xsks) = (ubpf_map_get(vm, c"tx_ports".as_ptr()), ubpf_map_get(vm, c"xsks".as_ptr()));
        let (key, ifindex) = (1u32.to_ne_bytes(), 3u32.to_ne_bytes());
        let mut back = [0u8; 4];
        let lookup =
            |back: &mut [u8; 4]| ubpf_map_lookup(tx_ports, key.as_ptr().cast(), 4, back.as_mut_ptr().cast(), 4);
        assert_eq!(lookup(&mut back), -libc::ENOENT);
        assert_eq!(ubpf_map_update(tx_ports, key.as_ptr().cast(), 4, ifindex.as_ptr().cast(), 4, 0), 0);
        assert_eq!(lookup(&mut back), 0);
        assert_eq!(back, ifindex);
        assert_eq!(ubpf_map_update(xsks, key.as_ptr().cast(), 4, ifindex.as_ptr().cast(), 4, 0), -libc::EOPNOTSUPP);
        ubpf_map_release(tx_ports);
        ubpf_map_release(xsks);
        ubpf_destroy(vm);
    }
}
