//! End-to-end tests of QEMU's filter-ubpf (qemu-patches/) with no guest.
//!
//! QEMU runs with `-M none -accel qtest`; two `-netdev dgram` on 127.0.0.1
//! are joined by a hub. Frames from a real capture are sent over UDP into
//! one netdev and what leaves the other is collected. `filter-dump` objects
//! record the frames before and after `filter-ubpf`. The oracle is
//! `qemu-ubpf replay` over the same capture, with the same options: QEMU
//! must pass exactly the frames replay passes, byte for byte, with the same
//! counters.
//!
//! QEMU comes from `scripts/qemu-build.sh`; its path is given in
//! QEMU_UBPF_QEMU. Without it these tests fail under CI and are skipped,
//! with a note, elsewhere.

#[allow(dead_code)] // the helpers this suite does not use serve the others
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use qemu_ubpf::replay::{IpMode, frame};
use serde_json::{Value, json};

/// How long to wait for QEMU before a test fails (QEMU under valgrind
/// takes about 20 s to start).
const WAIT: Duration = Duration::from_secs(90);

/// How long QEMU may take to answer `qmp_capabilities` once it has sent
/// its greeting (a few seconds under valgrind).
const HANDSHAKE: Duration = Duration::from_secs(30);

/// The QEMU to test.
fn qemu_binary() -> Option<PathBuf> {
    required_path("QEMU_UBPF_QEMU", "scripts/qemu-build.sh builds QEMU and prints its path")
}

/// The path in `variable`. Its absence fails the test under CI and skips
/// it, with a note on stderr, elsewhere.
fn required_path(variable: &str, how: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    common::missing_prerequisite(&format!("{variable} is not set ({how})"));
    None
}

/// The frames of a pcap file, in order.
fn frames(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = PcapReader::new(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        frames.push(packet.unwrap_or_else(|e| panic!("{}: {e}", path.display())).data.into_owned());
    }
    frames
}

/// A fresh directory for one rig's QMP socket, short enough for its path
/// (at most 107 bytes) wherever the tree is.
fn socket_dir() -> PathBuf {
    static RIGS: AtomicUsize = AtomicUsize::new(0);
    let dir =
        std::env::temp_dir().join(format!("qemu-ubpf-{}-{}", std::process::id(), RIGS.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `frames` as an Ethernet pcap file.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = PcapWriter::new(file).unwrap();
    for (index, frame) in frames.iter().enumerate() {
        let time = Duration::from_millis(index as u64);
        writer.write_packet(&PcapPacket::new(time, frame.len() as u32, frame)).unwrap();
    }
}

/// A UDP port free now. Another test may take it before QEMU binds it, so
/// [`launch`] retries with new ports when QEMU cannot start.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A QMP connection.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// The QMP connection of `qemu`, or `None` when it exits first or
    /// does not answer `qmp_capabilities` within [`HANDSHAKE`].
    fn connect(path: &Path, qemu: &mut Child) -> Option<Qmp> {
        let deadline = Instant::now() + WAIT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(_) if qemu.try_wait().unwrap().is_some() => return None,
                Err(e) if Instant::now() > deadline => panic!("QMP socket {}: {e}", path.display()),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut qmp = Qmp { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream };
        // An early event (RESUME) may come before the greeting.
        let greeting = loop {
            match qmp.try_read()? {
                event if event.get("event").is_some() => continue,
                greeting => break greeting,
            }
        };
        assert!(greeting.get("QMP").is_some(), "QMP greeting: {greeting}");
        // Once, on a loaded machine, a QEMU sent its greeting and then never
        // answered qmp_capabilities, idle in its main loop before any frame
        // was sent: `launch` starts such a QEMU again.
        qmp.send(json!({ "execute": "qmp_capabilities" })).ok()?;
        qmp.reader.get_ref().set_read_timeout(Some(HANDSHAKE)).unwrap();
        let reply = loop {
            match qmp.next() {
                Ok(Some(event)) if event.get("event").is_some() => continue,
                // Under valgrind a QEMU once sent its greeting a second
                // time where the answer was due (its monitor, it seems, saw
                // the connection it accepted while starting open again).
                Ok(Some(greeting)) if greeting.get("QMP").is_some() => continue,
                Ok(Some(reply)) => break reply,
                Ok(None) => return None,
                Err(e) => {
                    eprintln!("QMP {}: no answer to qmp_capabilities ({e}); starting QEMU again", path.display());
                    return None;
                }
            }
        };
        assert!(reply.get("return").is_some(), "qmp_capabilities: {reply}");
        qmp.reader.get_ref().set_read_timeout(Some(WAIT)).unwrap();
        Some(qmp)
    }

    /// The next message, or `None` when QEMU closed the connection.
    fn try_read(&mut self) -> Option<Value> {
        self.next().expect("QMP read")
    }

    fn next(&mut self) -> std::io::Result<Option<Value>> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok((!line.is_empty()).then(|| serde_json::from_str(&line).unwrap_or_else(|e| panic!("QMP sent {line:?}: {e}"))))
    }

    fn read(&mut self) -> Value {
        self.try_read().expect("QMP connection closed")
    }

    /// The command's return value, or its error object.
    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, Value> {
        self.send(json!({ "execute": command, "arguments": arguments })).expect("QMP write");
        loop {
            let reply = self.read();
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                return Err(error.clone());
            }
            // An asynchronous event: not the reply.
        }
    }

    /// Sends one request in one write: QEMU acts on a request as soon as its
    /// JSON is complete, so a newline written apart could meet a closed
    /// socket after `quit`.
    fn send(&mut self, request: Value) -> std::io::Result<()> {
        self.writer.write_all(format!("{request}\n").as_bytes())
    }

    fn set(&mut self, path: &str, property: &str, value: Value) -> Result<Value, Value> {
        self.execute("qom-set", json!({ "path": path, "property": property, "value": value }))
    }

    fn get(&mut self, path: &str, property: &str) -> Value {
        self.execute("qom-get", json!({ "path": path, "property": property }))
            .unwrap_or_else(|e| panic!("qom-get {path} {property}: {e}"))
    }
}

/// The counters of a filter-ubpf object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    passed: u64,
    dropped: u64,
    skipped: u64,
    errors: u64,
}

impl Counters {
    fn of(qmp: &mut Qmp, id: &str) -> Counters {
        let path = format!("/objects/{id}");
        let mut get = |name: &str| qmp.get(&path, name).as_u64().unwrap_or_else(|| panic!("{name} is not a u64"));
        Counters { passed: get("passed"), dropped: get("dropped"), skipped: get("skipped"), errors: get("errors") }
    }

    fn seen(&self) -> u64 {
        self.passed + self.dropped
    }
}

/// A dgram netdev bound to `local` on 127.0.0.1 that sends to `remote`.
fn dgram_netdev(id: &str, local: u16, remote: &UdpSocket) -> String {
    format!(
        "dgram,id={id},local.type=inet,local.host=127.0.0.1,local.port={local},\
         remote.type=inet,remote.host=127.0.0.1,remote.port={}",
        remote.local_addr().unwrap().port()
    )
}

/// Receives on a UDP socket in a thread of its own, so that QEMU never
/// finds the socket's buffer full.
struct Collector {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Collector {
    fn start(socket: UdpSocket) -> Collector {
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (frames, stop) = (frames.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = vec![0; 70_000];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(len) = socket.recv(&mut buf) {
                        frames.lock().unwrap().push(buf[..len].to_vec());
                    }
                }
            })
        };
        Collector { frames, stop, thread: Some(thread) }
    }

    /// The frames received, once there are `count` (and no more arrive).
    fn frames(&self, count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        while self.frames.lock().unwrap().len() < count && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(100));
        self.frames.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts QEMU with its QMP socket at `qmp_path`, the arguments `attempt`
/// gives, and no default devices. A UDP port picked by `attempt` may be
/// taken by then: when QEMU exits before QMP answers, or its QMP stalls
/// (see [`Qmp::connect`]), it tries again with new arguments. Returns what `attempt` returned with them. QEMU's stderr
/// goes to the file `stderr`, or else to the test's.
fn launch<T>(
    qemu: &Path,
    qmp_path: &Path,
    stderr: Option<&Path>,
    mut attempt: impl FnMut() -> (Vec<String>, T),
) -> (Child, Qmp, T) {
    for _ in 0..5 {
        let (args, value) = attempt();
        let stderr = match stderr {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("QEMU's stderr file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(qemu)
            .args(["-nodefaults", "-display", "none", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", qemu.display()));
        if let Some(qmp) = Qmp::connect(qmp_path, &mut child) {
            return (child, qmp, value);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("QEMU did not start in 5 attempts");
}

/// A running QEMU with two dgram netdevs on 127.0.0.1, n1 and n2, on one
/// hub. `inject` sends frames into n1; what n2 sends out arrives at
/// `collected`.
struct Rig {
    child: Child,
    qmp: Qmp,
    sockets: PathBuf,
    inject: UdpSocket,
    n1: u16,
    out: Collector,
}

impl Rig {
    fn start(qemu: &Path, objects: &[String]) -> Rig {
        Rig::start_logged(qemu, objects, None)
    }

    /// [`Rig::start`], with QEMU's stderr in the file `stderr`.
    fn start_logged(qemu: &Path, objects: &[String], stderr: Option<&Path>) -> Rig {
        let sockets = socket_dir();
        let qmp_path = sockets.join("qmp");
        let inject = UdpSocket::bind("127.0.0.1:0").unwrap();
        let out = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (child, qmp, n1) = launch(qemu, &qmp_path, stderr, || {
            let (n1, n2) = (free_udp_port(), free_udp_port());
            let mut args: Vec<String> = ["-M", "none", "-accel", "qtest"].map(String::from).into();
            for netdev in [
                dgram_netdev("n1", n1, &inject),
                dgram_netdev("n2", n2, &out),
                "hubport,id=h1,hubid=0,netdev=n1".into(),
                "hubport,id=h2,hubid=0,netdev=n2".into(),
            ] {
                args.extend(["-netdev".into(), netdev]);
            }
            for object in objects {
                args.extend(["-object".into(), object.clone()]);
            }
            (args, n1)
        });
        Rig { child, qmp, sockets, inject, n1, out: Collector::start(out) }
    }

    fn send(&self, frame: &[u8]) {
        self.inject.send_to(frame, ("127.0.0.1", self.n1)).expect("inject a frame");
    }

    /// Sends `frames` a few at a time, each batch once the filter `id` has
    /// seen the one before, so no socket buffer overflows.
    fn send_all(&mut self, id: &str, frames: &[Vec<u8>]) {
        let start = Counters::of(&mut self.qmp, id).seen();
        for (index, batch) in frames.chunks(8).enumerate() {
            for frame in batch {
                self.send(frame);
            }
            self.wait_seen(id, start + (index * 8 + batch.len()) as u64);
        }
    }

    fn wait_seen(&mut self, id: &str, seen: u64) -> Counters {
        let deadline = Instant::now() + WAIT;
        loop {
            let counters = Counters::of(&mut self.qmp, id);
            if counters.seen() >= seen {
                assert_eq!(counters.seen(), seen, "{id} saw more packets than were sent: {counters:?}");
                return counters;
            }
            assert!(Instant::now() < deadline, "{id} saw {} of {seen} packets: {counters:?}", counters.seen());
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// The frames n2 sent out, once there are `count` (and no more arrive).
    fn collected(&self, count: usize) -> Vec<Vec<u8>> {
        self.out.frames(count)
    }

    /// Quits QEMU over QMP; it must exit cleanly.
    fn quit(mut self) {
        self.qmp.send(json!({ "execute": "quit" })).expect("QMP quit");
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "QEMU did not quit");
            thread::sleep(Duration::from_millis(10));
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "QEMU exited with {status}");
    }
}

/// A failed test leaves no QEMU behind.
impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.sockets);
    }
}

/// What `qemu-ubpf replay` does with `capture`: its counters and the frames
/// it passes.
fn replay(dir: &Path, program: &Path, capture: &Path, options: &[&str]) -> (Counters, Vec<Vec<u8>>) {
    let (summary, passed) = replay_summary(dir, program, capture, options);
    (counters_of_summary(&summary), passed)
}

/// `qemu-ubpf replay --json` over `capture`: its summary and the frames it
/// passes.
fn replay_summary(dir: &Path, program: &Path, capture: &Path, options: &[&str]) -> (Value, Vec<Vec<u8>>) {
    replay_inputs(dir, options, &[program, capture])
}

/// `qemu-ubpf replay --json` with `options` and then `inputs` (the program
/// and the capture, or with `--expr` the capture alone).
fn replay_inputs(dir: &Path, options: &[&str], inputs: &[&Path]) -> (Value, Vec<Vec<u8>>) {
    let pass = dir.join("replay-pass.pcap");
    let output = Command::new(env!("CARGO_BIN_EXE_qemu-ubpf"))
        .arg("replay")
        .arg("--json")
        .args(options)
        .arg("--pass")
        .arg(&pass)
        .args(inputs)
        .output()
        .unwrap();
    assert!(output.status.success(), "replay: {}", String::from_utf8_lossy(&output.stderr));
    (serde_json::from_slice(&output.stdout).unwrap(), frames(&pass))
}

/// What `qemu-ubpf replay --expr expr` does with `capture`: its counters
/// and the frames it passes.
fn replay_expr(dir: &Path, expr: &str, capture: &Path, options: &[&str]) -> (Counters, Vec<Vec<u8>>) {
    let (summary, passed) = replay_inputs(dir, &[&["--expr", expr], options].concat(), &[capture]);
    (counters_of_summary(&summary), passed)
}

fn counters_of_summary(summary: &Value) -> Counters {
    let count = |name: &str| summary[name].as_u64().unwrap();
    Counters { passed: count("passed"), dropped: count("dropped"), skipped: count("skipped"), errors: count("errors") }
}

/// Raw bytecode assembled by `qemu-ubpf asm` from `source`.
fn assembled(dir: &Path, name: &str, source: &str) -> PathBuf {
    let text = dir.join(format!("{name}.s"));
    let bytecode = dir.join(format!("{name}.bin"));
    std::fs::write(&text, source).unwrap();
    let output =
        Command::new(env!("CARGO_BIN_EXE_qemu-ubpf")).arg("asm").arg("-o").arg(&bytecode).arg(&text).output().unwrap();
    assert!(output.status.success(), "asm {name}: {}", String::from_utf8_lossy(&output.stderr));
    bytecode
}

/// Drops Ethernet frames carrying IPv4 to 1.1.1.1 (untagged), for ip-mode=off.
const FRAME_DROP_1_1_1_1: &str = "mov r0, 0
jlt r2, 34, out
ldxh r3, [r1+12]
jne r3, 0x0008, out
ldxw r3, [r1+30]
jne r3, 0x01010101, out
mov r0, 1
out:
exit
";

/// Faults on every packet: reads far beyond any frame.
const FAULTS: &str = "ldxb r0, [r1+0x7000]\nexit\n";

const DROP_ALL: &str = "mov r0, 1\nexit\n";

fn filter_object(id: &str, netdev: &str, queue: &str, handler: &Path, options: &str) -> String {
    format!("filter-ubpf,id={id},netdev={netdev},queue={queue},ubpf-handler={}{options}", handler.display())
}

/// A filter-ubpf object running the tcpdump expression `expr` (which must
/// hold no comma).
fn expr_object(id: &str, netdev: &str, queue: &str, expr: &str, options: &str) -> String {
    format!("filter-ubpf,id={id},netdev={netdev},queue={queue},filter-expr={expr}{options}")
}

fn dump_object(id: &str, netdev: &str, queue: &str, file: &Path) -> String {
    format!("filter-dump,id={id},netdev={netdev},queue={queue},file={}", file.display())
}

/// One run of the rig in `dir`: `program` on `queue` with `options`
/// (QEMU's) and `replay_options` (the same, spelled for replay); checks the
/// frames out, both dumps and the counters against replay.
fn filters_like_replay(qemu: &Path, dir: &Path, queue: &str, program: &Path, options: &str, replay_options: &[&str]) {
    let test = dir.file_name().unwrap().to_string_lossy();
    let capture = common::sample("ethernet.pcap");
    let sent = frames(&capture);
    let (expected, expected_frames) = replay(dir, program, &capture, replay_options);
    assert!(expected.seen() == sent.len() as u64 && expected.passed > 0, "{test}: replay's summary: {expected:?}");

    // tx on n1 sees frames n1 hands to the hub; rx on n2 sees those the hub
    // hands to n2. Filters see rx packets in reverse order of the list.
    let netdev = if queue == "tx" { "n1" } else { "n2" };
    let (before, after) = (dir.join("before.pcap"), dir.join("after.pcap"));
    let mut objects = vec![
        dump_object("before", netdev, queue, &before),
        filter_object("f0", netdev, queue, program, options),
        dump_object("after", netdev, queue, &after),
    ];
    if queue == "rx" {
        objects.reverse();
    }
    let mut rig = Rig::start(qemu, &objects);
    rig.send_all("f0", &sent);
    let counters = Counters::of(&mut rig.qmp, "f0");
    let out = rig.collected(expected_frames.len());
    rig.quit();

    assert_eq!(counters, expected, "{test}: QEMU's counters against replay's");
    assert_eq!(out.len(), expected_frames.len(), "{test}: frames out of n2");
    let differs = out.iter().zip(&expected_frames).position(|(got, want)| got != want);
    assert_eq!(differs, None, "{test}: the frames out of n2 differ from those replay passes, first at this index");
    assert!(frames(&before) == sent, "{test}: the dump before the filter differs from the frames sent");
    assert!(frames(&after) == expected_frames, "{test}: the dump after the filter differs from replay's");
}

/// The RFC example, which sees IPv4 packets (ip-mode on, the default).
fn ip_packets(test: &str, queue: &str, jit: bool) {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", test);
    let program = common::example("drop_1_1_1_1");
    let (options, engine) = if jit { (",ip-mode=on", "jit") } else { (",jit=off", "interp") };
    filters_like_replay(&qemu, &dir, queue, &program, options, &["--engine", engine]);
}

#[test]
fn tx_ip_mode_on_jit() {
    ip_packets("tx_ip_mode_on_jit", "tx", true);
}

#[test]
fn tx_ip_mode_on_interpreter() {
    ip_packets("tx_ip_mode_on_interpreter", "tx", false);
}

#[test]
fn rx_ip_mode_on_jit() {
    ip_packets("rx_ip_mode_on_jit", "rx", true);
}

#[test]
fn rx_ip_mode_on_interpreter() {
    ip_packets("rx_ip_mode_on_interpreter", "rx", false);
}

/// A program that reads Ethernet frames (ip-mode off).
fn whole_frames(test: &str, queue: &str, jit: bool) {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", test);
    let program = assembled(&dir, "frame_drop", FRAME_DROP_1_1_1_1);
    let (options, engine) = if jit { (",ip-mode=off", "jit") } else { (",ip-mode=off,jit=off", "interp") };
    filters_like_replay(&qemu, &dir, queue, &program, options, &["--ip-mode", "off", "--engine", engine]);
}

#[test]
fn tx_ip_mode_off_jit() {
    whole_frames("tx_ip_mode_off_jit", "tx", true);
}

#[test]
fn tx_ip_mode_off_interpreter() {
    whole_frames("tx_ip_mode_off_interpreter", "tx", false);
}

#[test]
fn rx_ip_mode_off_jit() {
    whole_frames("rx_ip_mode_off_jit", "rx", true);
}

#[test]
fn rx_ip_mode_off_interpreter() {
    whole_frames("rx_ip_mode_off_interpreter", "rx", false);
}

fn faults(test: &str, on_error: &str, jit: &str, engine: &str) {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", test);
    let program = assembled(&dir, "faults", FAULTS);
    let options = format!(",on-error={on_error},jit={jit}");
    filters_like_replay(&qemu, &dir, "tx", &program, &options, &["--on-error", on_error, "--engine", engine]);
}

#[test]
fn faults_are_counted_and_dropped() {
    faults("faults_are_counted_and_dropped", "drop", "on", "jit");
}

#[test]
fn faults_are_counted_and_passed_when_asked() {
    faults("faults_are_counted_and_passed_when_asked", "pass", "off", "interp");
}

/// Traffic that makes every run fault cannot flood the host's log: 10,000
/// faulting frames give 10,000 errors and at most a few lines on stderr.
#[test]
fn ten_thousand_faults_are_counted_and_barely_logged() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "ten_thousand_faults_are_counted_and_barely_logged");
    let program = assembled(&dir, "faults", FAULTS);
    let log = dir.join("stderr.txt");
    let mut rig = Rig::start_logged(&qemu, &[filter_object("f0", "n1", "tx", &program, ",ip-mode=off")], Some(&log));
    let frame = &frames(&common::sample("ethernet.pcap"))[0];
    rig.send_all("f0", &vec![frame.clone(); 10_000]);
    let counters = Counters::of(&mut rig.qmp, "f0");
    rig.quit();
    assert_eq!(counters, Counters { passed: 0, dropped: 10_000, skipped: 0, errors: 10_000 });
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.lines().count() <= 3, "QEMU's stderr after 10,000 faults:\n{logged}");
    assert!(logged.contains("filter-ubpf"), "the first fault is reported: {logged:?}");
}

/// Frames that carry IPv4 to 1.1.1.1 among the sample's: what the RFC
/// example drops.
fn to_1_1_1_1(dir: &Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (_, passed) = replay(dir, &common::example("drop_1_1_1_1"), &common::sample("ethernet.pcap"), &[]);
    let all = frames(&common::sample("ethernet.pcap"));
    let dropped = all.iter().filter(|frame| !passed.contains(frame)).cloned().collect();
    (dropped, passed)
}

#[test]
fn swap_under_traffic_loses_nothing() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "swap_under_traffic_loses_nothing");
    let rfc = common::example("drop_1_1_1_1");
    let drop_all = assembled(&dir, "drop_all", DROP_ALL);
    let frames = frames(&common::sample("ethernet.pcap"));
    let rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &rfc, "")]);
    let rig = Arc::new(Mutex::new(rig));

    // A steady stream from another thread while the program changes.
    const ROUNDS: usize = 20;
    let total = ROUNDS * frames.len();
    let sender = {
        let (inject, n1) = {
            let rig = rig.lock().unwrap();
            (rig.inject.try_clone().unwrap(), rig.n1)
        };
        let frames = frames.clone();
        thread::spawn(move || {
            for _ in 0..ROUNDS {
                for frame in &frames {
                    inject.send_to(frame, ("127.0.0.1", n1)).unwrap();
                    thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    let mut swaps = 0;
    while !sender.is_finished() {
        let mut rig = rig.lock().unwrap();
        // Programs and an expression with the RFC's verdicts take turns.
        let (property, value) = match swaps % 3 {
            0 => ("ubpf-handler", json!(drop_all)),
            1 => ("ubpf-handler", json!(rfc)),
            _ => ("filter-expr", json!(RFC_EXPR)),
        };
        rig.qmp.set("/objects/f0", property, value.clone()).expect("swap");
        if swaps % 5 == 0 {
            // A failed swap keeps the program that runs.
            let error = rig.qmp.set("/objects/f0", "ubpf-handler", json!("/nonexistent/prog.o")).unwrap_err();
            assert_eq!(error["class"], "GenericError", "{error}");
            let error = rig.qmp.set("/objects/f0", "filter-expr", json!("ip dst")).unwrap_err();
            assert_eq!(error["class"], "GenericError", "{error}");
            assert_eq!(rig.qmp.get("/objects/f0", property), value);
        }
        swaps += 1;
        drop(rig);
        thread::sleep(Duration::from_millis(3));
    }
    sender.join().unwrap();
    let mut rig = Arc::into_inner(rig).unwrap().into_inner().unwrap();
    let counters = rig.wait_seen("f0", total as u64);
    let out = rig.collected(counters.passed as usize);
    rig.quit();
    assert!(swaps >= 15, "only {swaps} swaps happened during the stream");
    assert_eq!(out.len() as u64, counters.passed, "every frame is delivered or counted as dropped: {counters:?}");
    assert_eq!(counters.errors, 0);
    // Under either program, frames to 1.1.1.1 never pass.
    let (to_1111, _) = to_1_1_1_1(&dir);
    assert!(out.iter().all(|frame| !to_1111.contains(frame)), "a frame to 1.1.1.1 passed");
}

/// A tcpdump expression with the RFC example's verdicts on every frame of
/// the sample: IPv4 to 1.1.1.1, untagged or under one VLAN tag.
const RFC_EXPR: &str = "ip dst 1.1.1.1 or (vlan and ip dst 1.1.1.1)";

/// filter-expr drops what the expression matches, as `replay --expr` does
/// (tcpdump's selection), with the JIT and the interpreter.
#[test]
fn filter_expr_drops_what_replay_expr_drops() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "filter_expr_drops_what_replay_expr_drops");
    let capture = common::sample("ethernet.pcap");
    let sent = frames(&capture);
    for expr in ["dst host 1.1.1.1", "tcp or arp", RFC_EXPR] {
        for (options, engine) in [("", "jit"), (",jit=off", "interp")] {
            let what = format!("{expr:?} with {engine}");
            let (expected, expected_frames) = replay_expr(&dir, expr, &capture, &["--engine", engine]);
            assert!(expected.dropped > 0 && expected.passed > 0, "{what}: replay's summary: {expected:?}");
            let mut rig = Rig::start(&qemu, &[expr_object("f0", "n1", "tx", expr, options)]);
            rig.send_all("f0", &sent);
            let counters = Counters::of(&mut rig.qmp, "f0");
            let out = rig.collected(expected_frames.len());
            rig.quit();
            assert_eq!(counters, expected, "{what}: QEMU's counters against replay's");
            assert!(out == expected_frames, "{what}: the frames out of n2 differ from those replay passes");
        }
    }
}

/// The RFC's check: `filter-expr='dst host 1.1.1.1'` gives the RFC C
/// program's verdicts (the example drop_1_1_1_1, built from
/// tests/fixtures/build/rfc_filter.c's source) on the frames the program
/// reads in ip-mode, untagged IPv4; on the whole sample the expression
/// also drops the ARP request for 1.1.1.1 and passes VLAN-tagged frames,
/// as tcpdump selects them, and RFC_EXPR gives the program's verdicts on
/// every frame.
#[test]
fn filter_expr_gives_the_rfc_programs_verdicts() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "filter_expr_gives_the_rfc_programs_verdicts");
    let rfc = common::example("drop_1_1_1_1");
    let all = frames(&common::sample("ethernet.pcap"));
    let untagged_ipv4: Vec<Vec<u8>> =
        all.iter().filter(|frame| frame.get(12..14) == Some(&[0x08, 0x00])).cloned().collect();
    assert!(untagged_ipv4.len() > 10 && untagged_ipv4.len() < all.len());
    let ipv4_capture = dir.join("untagged-ipv4.pcap");
    write_pcap(&ipv4_capture, &untagged_ipv4);

    for (expr, capture, sent) in
        [("dst host 1.1.1.1", &ipv4_capture, &untagged_ipv4), (RFC_EXPR, &common::sample("ethernet.pcap"), &all)]
    {
        let (program, program_passed) = replay(&dir, &rfc, capture, &[]);
        let mut rig = Rig::start(&qemu, &[expr_object("f0", "n1", "tx", expr, "")]);
        rig.send_all("f0", sent);
        let counters = Counters::of(&mut rig.qmp, "f0");
        let out = rig.collected(program_passed.len());
        rig.quit();
        assert_eq!((counters.passed, counters.dropped), (program.passed, program.dropped), "{expr:?}: {counters:?}");
        assert!(out == program_passed, "{expr:?}: the frames out differ from those the RFC program passes");
    }
}

/// qom-set of filter-expr swaps the program, ubpf-handler and filter-expr
/// replace each other, a bad expression keeps the running filter and
/// returns libpcap's message, and creation refuses both at once.
#[test]
fn filter_expr_swaps_over_qmp_and_a_bad_one_keeps_the_old() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "filter_expr_swaps_over_qmp_and_a_bad_one_keeps_the_old");
    let (to_1111, passed) = to_1_1_1_1(&dir);
    let drop_all = assembled(&dir, "drop_all", DROP_ALL);
    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &drop_all, ",ip-mode=off")]);

    rig.qmp.set("/objects/f0", "filter-expr", json!(RFC_EXPR)).expect("swap to an expression");
    assert_eq!(rig.qmp.get("/objects/f0", "ubpf-handler"), json!(""));
    let error = rig.qmp.set("/objects/f0", "filter-expr", json!("ip dst 1.1.1.1 and")).unwrap_err();
    assert_eq!(error["class"], "GenericError", "{error}");
    assert!(error["desc"].as_str().unwrap().contains("syntax error"), "libpcap's message: {error}");
    let error = rig.qmp.set("/objects/f0", "program", json!("main")).unwrap_err();
    assert!(error["desc"].as_str().unwrap().contains("filter-expr"), "{error}");
    assert_eq!(rig.qmp.get("/objects/f0", "filter-expr"), json!(RFC_EXPR));
    let all = [to_1111.clone(), passed.clone()].concat();
    rig.send_all("f0", &all);
    assert!(rig.collected(passed.len()) == passed, "the expression still runs after the failed swap");
    assert_eq!(Counters::of(&mut rig.qmp, "f0").dropped, to_1111.len() as u64);

    rig.qmp.set("/objects/f0", "ubpf-handler", json!(drop_all)).expect("swap back to a program");
    assert_eq!(rig.qmp.get("/objects/f0", "filter-expr"), json!(""));
    rig.send_all("f0", &passed);
    assert_eq!(rig.collected(passed.len()).len(), passed.len(), "the program drops everything again");

    let both = rig
        .qmp
        .execute(
            "object-add",
            json!({ "qom-type": "filter-ubpf", "id": "f1", "netdev": "n1",
                    "ubpf-handler": drop_all, "filter-expr": "ip" }),
        )
        .expect_err("ubpf-handler and filter-expr at once");
    assert!(both["desc"].as_str().unwrap().contains("alternatives"), "{both}");
    let bad = rig
        .qmp
        .execute(
            "object-add",
            json!({ "qom-type": "filter-ubpf", "id": "f1", "netdev": "n1", "filter-expr": "ip and" }),
        )
        .expect_err("a bad expression");
    assert!(bad["desc"].as_str().unwrap().contains("syntax error"), "{bad}");
    rig.quit();

    let output = Command::new(&qemu)
        .args(["-M", "none", "-accel", "qtest", "-nodefaults", "-display", "none"])
        .args(["-netdev", "hubport,id=h1,hubid=0"])
        .args(["-object", &expr_object("f0", "h1", "all", "port 53 or", "")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "a bad expression at creation; stderr: {stderr}");
    assert!(stderr.contains("filter-expr") && stderr.contains("syntax error"), "{stderr}");
}

#[test]
fn status_off_passes_everything_and_on_filters_again() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "status_off_passes_everything_and_on_filters_again");
    let (to_1111, _) = to_1_1_1_1(&dir);
    let rfc = common::example("drop_1_1_1_1");
    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &rfc, "")]);

    rig.qmp.set("/objects/f0", "status", json!("off")).expect("status off");
    for frame in &to_1111 {
        rig.send(frame);
    }
    let out = rig.collected(to_1111.len());
    assert!(out == to_1111, "with status off every frame passes");
    assert_eq!(Counters::of(&mut rig.qmp, "f0"), Counters::default(), "a disabled filter sees nothing");

    rig.qmp.set("/objects/f0", "status", json!("on")).expect("status on");
    rig.send_all("f0", &to_1111);
    let counters = Counters::of(&mut rig.qmp, "f0");
    assert_eq!(counters, Counters { dropped: to_1111.len() as u64, ..Counters::default() });
    assert_eq!(rig.collected(to_1111.len()).len(), to_1111.len(), "nothing more passed once on again");
    rig.quit();
}

#[test]
fn object_add_and_object_del_over_qmp() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "object_add_and_object_del_over_qmp");
    let (to_1111, passed) = to_1_1_1_1(&dir);
    let rfc = common::example("drop_1_1_1_1");
    let mut rig = Rig::start(&qemu, &[]);

    let added = rig.qmp.execute(
        "object-add",
        json!({ "qom-type": "filter-ubpf", "id": "f1", "netdev": "n1", "queue": "tx", "ubpf-handler": rfc }),
    );
    added.expect("object-add filter-ubpf");
    let all = [to_1111.clone(), passed.clone()].concat();
    rig.send_all("f1", &all);
    assert!(rig.collected(passed.len()) == passed, "with the filter added, the frames to 1.1.1.1 are dropped");
    assert_eq!(Counters::of(&mut rig.qmp, "f1").dropped, to_1111.len() as u64);

    rig.qmp.execute("object-del", json!({ "id": "f1" })).expect("object-del");
    for frame in &to_1111 {
        rig.send(frame);
    }
    let out = rig.collected(passed.len() + to_1111.len());
    assert!(out[passed.len()..] == to_1111[..], "with the filter deleted, every frame passes");
    rig.quit();
}

/// Handlers QEMU must refuse at creation, each with what its error names.
fn bad_handlers(dir: &Path) -> Vec<(&'static str, PathBuf, &'static str)> {
    let garbage_elf = dir.join("garbage.o");
    std::fs::write(&garbage_elf, b"\x7fELF\x02\x01\x01\0garbage that is not an ELF object").unwrap();
    vec![
        ("missing file", dir.join("missing.o"), "missing.o"),
        ("corrupt ELF", garbage_elf, "garbage.o"),
        ("unknown helper", assembled(dir, "unknown_helper", "call 4000\nexit\n"), "4000"),
        ("jump out of the program", assembled(dir, "wild_jump", "ja +5\nexit\n"), "instruction 0"),
        ("write to r10", assembled(dir, "writes_r10", "mov r10, 0\nexit\n"), "r10"),
    ]
}

#[test]
fn bad_handlers_fail_creation_cleanly_on_the_command_line() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "bad_handlers_fail_creation_cleanly_on_the_command_line");
    for (what, handler, named) in bad_handlers(&dir) {
        let output = Command::new(&qemu)
            .args(["-M", "none", "-accel", "qtest", "-nodefaults", "-display", "none"])
            .args(["-netdev", "hubport,id=h1,hubid=0"])
            .args(["-object", &filter_object("f0", "h1", "all", &handler, "")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: QEMU should exit 1; stderr: {stderr}");
        assert!(
            stderr.contains("filter-ubpf") && stderr.contains(named),
            "{what}: the error should name {named}: {stderr}"
        );
    }
}

#[test]
fn bad_handlers_fail_object_add_with_a_generic_error() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "bad_handlers_fail_object_add_with_a_generic_error");
    let mut rig = Rig::start(&qemu, &[]);
    for (what, handler, named) in bad_handlers(&dir) {
        let error = rig
            .qmp
            .execute(
                "object-add",
                json!({ "qom-type": "filter-ubpf", "id": "bad", "netdev": "n1", "ubpf-handler": handler }),
            )
            .expect_err(what);
        assert_eq!(error["class"], "GenericError", "{what}: {error}");
        let desc = error["desc"].as_str().unwrap();
        assert!(desc.contains(named), "{what}: the error should name {named}: {desc}");
    }
    // QEMU is alive and the id is free: a good handler is accepted.
    let rfc = common::example("drop_1_1_1_1");
    rig.qmp
        .execute("object-add", json!({ "qom-type": "filter-ubpf", "id": "bad", "netdev": "n1", "ubpf-handler": rfc }))
        .expect("object-add after the failures");
    let error = rig
        .qmp
        .execute(
            "object-add",
            json!({ "qom-type": "filter-ubpf", "id": "raw", "netdev": "n1",
                    "ubpf-handler": assembled(&dir, "raw", DROP_ALL), "program": "main" }),
        )
        .expect_err("program= with raw bytecode");
    assert!(error["desc"].as_str().unwrap().contains("raw bytecode"), "{error}");
    rig.quit();
}

/// ICMP echo requests in `frames` (Ethernet, IPv4 found as ip-mode finds it),
/// by destination address.
fn pings_to(frames: &[Vec<u8>], destination: [u8; 4]) -> usize {
    frames
        .iter()
        .filter(|frame| {
            let Ok(Some(ip)) = frame::program_input(IpMode::On, frame::link_type::ETHERNET, frame) else {
                return false;
            };
            ip.len() >= 20
                && ip[9] == 1
                && ip[16..20] == destination
                && ip.get(usize::from(ip[0] & 0x0f) * 4) == Some(&8)
        })
        .count()
}

/// The RFC's own scenario with a real guest: Debian's cloud kernel and a
/// busybox initramfs (scripts/qemu-guest.sh) under TCG with a virtio-net
/// NIC ping 1.1.1.1 and 9.9.9.9, three times each; filter-ubpf with the
/// RFC example on queue=rx drops the first three and passes the others.
#[test]
fn a_real_guest_has_its_pings_to_1_1_1_1_dropped() {
    let rfc = common::example("drop_1_1_1_1");
    guest_pings_to_1_1_1_1_dropped("a_real_guest_has_its_pings_to_1_1_1_1_dropped", |netdev, queue| {
        filter_object("f0", netdev, queue, &rfc, "")
    });
}

/// The same with `filter-expr='dst host 1.1.1.1'` instead of the program.
#[test]
fn a_real_guest_has_its_pings_to_1_1_1_1_dropped_by_filter_expr() {
    guest_pings_to_1_1_1_1_dropped("a_real_guest_has_its_pings_to_1_1_1_1_dropped_by_filter_expr", |netdev, queue| {
        expr_object("f0", netdev, queue, "dst host 1.1.1.1", "")
    });
}

/// Boots the guest with the filter object `filter(netdev, queue)` (id f0)
/// between two dumps and checks that exactly its pings to 1.1.1.1 vanish.
fn guest_pings_to_1_1_1_1_dropped(test: &str, filter: impl Fn(&str, &str) -> String) {
    let Some(run) = run_guest(test, filter, GuestSetup::default()) else { return };
    assert_eq!((pings_to(&run.seen, [1, 1, 1, 1]), pings_to(&run.seen, [9, 9, 9, 9])), (3, 3), "pings the guest sent");
    assert_eq!((pings_to(&run.passed, [1, 1, 1, 1]), pings_to(&run.passed, [9, 9, 9, 9])), (0, 3), "pings that passed");
    assert_eq!(run.counters.dropped, 3, "{:?}", run.counters);
    assert_eq!(run.counters.errors, 0, "{:?}", run.counters);
    assert_eq!(run.counters.seen(), run.seen.len() as u64, "{:?}", run.counters);
    assert!(run.out.frames(run.passed.len()) == run.passed, "the frames the netdev sent are those after the filter");
}

/// XDP with a real guest: `examples/xdp/ping.o` on queue=rx answers the
/// guest's pings itself with XDP_TX, back to the guest, whose kernel checks
/// the replies' checksums: busybox's ping must count every reply, and none
/// of the pings may leave through the netdev.
#[test]
fn a_real_guest_has_its_pings_answered_by_an_xdp_program() {
    let ping = common::example("xdp/ping");
    let test = "a_real_guest_has_its_pings_answered_by_an_xdp_program";
    let filter = |netdev: &str, queue: &str| filter_object("f0", netdev, queue, &ping, "");
    let setup = GuestSetup { extra: &["xdp-tx", "send-errors"], ..GuestSetup::default() };
    let Some(run) = run_guest(test, filter, setup) else { return };
    let replies = run.log.matches("3 packets transmitted, 3 packets received").count();
    assert_eq!(replies, 2, "both pings got their three replies; the guest's console:\n{}", run.log);
    assert_eq!((pings_to(&run.seen, [1, 1, 1, 1]), pings_to(&run.seen, [9, 9, 9, 9])), (3, 3), "pings the guest sent");
    assert_eq!((pings_to(&run.passed, [1, 1, 1, 1]), pings_to(&run.passed, [9, 9, 9, 9])), (0, 0), "pings that passed");
    assert_eq!(run.extra, [6, 0], "xdp-tx and send-errors");
    assert_eq!(run.counters.dropped, 6, "the pings sent back are not passed: {:?}", run.counters);
    assert_eq!(run.counters.errors, 0, "{:?}", run.counters);
    assert_eq!(run.counters.seen(), run.seen.len() as u64, "{:?}", run.counters);
    assert!(run.out.frames(run.passed.len()) == run.passed, "the frames the netdev sent are those after the filter");
}

/// A redirect between two netdevs with a real guest:
/// `examples/xdp/redirect.o` on queue=rx, its maps putting the gateway's
/// MAC address (52:54:00:00:02:02, fixed in the guest's ARP table) on port
/// 1 and port 1 on ifindex 1, the netdev n1 of `redirect`. Every frame the
/// guest sends to the gateway, its six pings, must leave through n1 as the
/// guest sent it, and none through n0, the guest's own netdev.
#[test]
fn a_real_guest_has_its_pings_redirected_to_a_second_netdev_by_an_xdp_program() {
    let redirect = common::example("xdp/redirect");
    let test = "a_real_guest_has_its_pings_redirected_to_a_second_netdev_by_an_xdp_program";
    let maps = r#"{"mac_ports": [{"key": "5254000002020000", "value": 1}], "ports": [{"key": 1, "value": 1}]}"#;
    let options = format!(",redirect=n1,map-update={}", maps.replace(',', ",,"));
    let filter = |netdev: &str, queue: &str| filter_object("f0", netdev, queue, &redirect, &options);
    let extra = ["xdp-redirect", "xdp-pass", "redirect-errors", "send-errors"];
    let setup = GuestSetup { extra: &extra, second_netdev: true, ..GuestSetup::default() };
    let Some(run) = run_guest(test, filter, setup) else { return };
    let to_gateway: Vec<Vec<u8>> =
        run.seen.iter().filter(|frame| frame.starts_with(&GUEST_GATEWAY_MAC)).cloned().collect();
    assert_eq!(
        (pings_to(&to_gateway, [1, 1, 1, 1]), pings_to(&to_gateway, [9, 9, 9, 9])),
        (3, 3),
        "pings the guest sent"
    );
    assert_eq!(to_gateway.len(), 6, "the guest sent the gateway its pings and nothing else");
    let redirected = run.redirected.as_ref().expect("n1's collector").frames(to_gateway.len());
    assert!(redirected == to_gateway, "the frames out of n1 are the guest's frames to the gateway, as it sent them");
    assert_eq!(pings_to(&run.passed, [1, 1, 1, 1]) + pings_to(&run.passed, [9, 9, 9, 9]), 0, "pings that passed");
    let passed = run.seen.len() as u64 - 6;
    assert_eq!(run.extra, [6, passed, 0, 0], "xdp-redirect, xdp-pass, redirect-errors and send-errors");
    assert_eq!(run.counters.dropped, 6, "the frames redirected are not passed: {:?}", run.counters);
    assert_eq!(run.counters.errors, 0, "{:?}", run.counters);
    assert_eq!(run.counters.seen(), run.seen.len() as u64, "{:?}", run.counters);
    assert!(run.out.frames(run.passed.len()) == run.passed, "the frames n0 sent are those after the filter");
}

/// A destination NAT with a real guest, whose kernel checks the checksums
/// that `examples/xdp/dnat.o` fixed with bpf_csum_diff. The filter sits on
/// queue=tx, toward the guest (not between the dumps), with one rule: TCP
/// to 10.0.2.99:80 goes on to 10.0.2.15:8080, the guest's own address.
/// While the guest pings, the host sends it two SYNs to 10.0.2.99:80 again
/// and again: one from port 40000 with correct checksums and one from port
/// 40001 whose TCP checksum is off by one. Without the rewrite the guest
/// would ignore both (not its address). With it, its kernel answers each
/// good SYN to its closed port 8080 with a RST, and only a segment whose
/// checksums it accepted gets one: so RSTs to port 40000 and none to 40001.
#[test]
fn a_real_guest_accepts_the_checksums_of_an_xdp_destination_nat() {
    let dnat = common::example("xdp/dnat");
    let test = "a_real_guest_accepts_the_checksums_of_an_xdp_destination_nat";
    // struct nat_key {10.0.2.99, 80, TCP, 0} -> struct nat_value {10.0.2.15, 8080, 0}.
    let maps = r#"{"nat_rules": [{"key": "0a00026300500600", "value": "0a00020f1f900000"}]}"#;
    let options = format!(",map-update={}", maps.replace(',', ",,"));
    let filter = |netdev: &str, _queue: &str| filter_object("f0", netdev, "tx", &dnat, &options);
    let mut bad = syn_to_guest([10, 0, 2, 99], 80, 40_001);
    let tcp_checksum = 14 + 20 + 16;
    bad[tcp_checksum + 1] ^= 1;
    let to_guest = [syn_to_guest([10, 0, 2, 99], 80, 40_000), bad];
    let setup = GuestSetup { extra: &["xdp-pass"], to_guest: &to_guest, ..GuestSetup::default() };
    let Some(run) = run_guest(test, filter, setup) else { return };
    assert!(run.rounds_to_guest > 0, "the guest's network came up before its pings ended");
    let (good, bad) = (resets_to(&run.seen, 40_000), resets_to(&run.seen, 40_001));
    assert!(good > 0, "the guest answered no SYN rewritten to 10.0.2.15:8080; its console:\n{}", run.log);
    assert!(good <= run.rounds_to_guest, "at most one RST per good SYN: {good} for {}", run.rounds_to_guest);
    assert_eq!(bad, 0, "the guest answered a SYN whose TCP checksum was wrong");
    let sent = 2 * run.rounds_to_guest as u64;
    assert_eq!(run.extra, [sent], "xdp-pass: every SYN was rewritten and passed");
    assert_eq!(run.counters.passed, sent, "{:?}", run.counters);
    assert_eq!((run.counters.dropped, run.counters.errors), (0, 0), "{:?}", run.counters);
}

/// A VLAN pop with a real guest, whose kernel has no VLAN device and so
/// ignores tagged frames: `examples/xdp/vlan_pop.o` on queue=tx, toward
/// the guest, takes the 802.1Q tag (VLAN 100) off the SYNs the host sends
/// to its closed port 8080 while it pings, and the guest answers them with
/// RSTs. Without the pop it answers none.
#[test]
fn a_real_guest_answers_frames_whose_vlan_tag_an_xdp_program_popped() {
    let vlan_pop = common::example("xdp/vlan_pop");
    let test = "a_real_guest_answers_frames_whose_vlan_tag_an_xdp_program_popped";
    let filter = |netdev: &str, _queue: &str| filter_object("f0", netdev, "tx", &vlan_pop, "");
    let mut tagged = syn_to_guest([10, 0, 2, 15], 8080, 40_002);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 100]);
    let to_guest = [tagged];
    let setup = GuestSetup { extra: &["xdp-pass"], to_guest: &to_guest, ..GuestSetup::default() };
    let Some(run) = run_guest(test, filter, setup) else { return };
    assert!(run.rounds_to_guest > 0, "the guest's network came up before its pings ended");
    let answered = resets_to(&run.seen, 40_002);
    assert!(answered > 0, "the guest answered no SYN whose tag was popped; its console:\n{}", run.log);
    assert!(answered <= run.rounds_to_guest, "at most one RST per SYN: {answered} for {}", run.rounds_to_guest);
    assert_eq!(run.extra, [run.rounds_to_guest as u64], "xdp-pass: every SYN passed");
    assert_eq!((run.counters.passed, run.counters.errors), (run.rounds_to_guest as u64, 0), "{:?}", run.counters);
}

/// The sequence number of the SYNs to the guest.
const SYN_SEQUENCE: u32 = 0x1234_5678;

/// A TCP SYN from the gateway (10.0.2.2:`source_port`) to the guest's MAC
/// address and `destination`:`destination_port`, with correct checksums.
fn syn_to_guest(destination: [u8; 4], destination_port: u16, source_port: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(GUEST_GATEWAY_MAC, GUEST_MAC)
        .ipv4([10, 0, 2, 2], destination, 64)
        .tcp(source_port, destination_port, SYN_SEQUENCE, 64_240)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

/// How many of `frames` are the guest's RSTs (with ACK) from its closed
/// port 10.0.2.15:8080 to 10.0.2.2:`port`, answering a SYN of
/// [`SYN_SEQUENCE`].
fn resets_to(frames: &[Vec<u8>], port: u16) -> usize {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let is_reset = |frame: &Vec<u8>| {
        let Ok(packet) = SlicedPacket::from_ethernet(frame) else { return false };
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (packet.net, packet.transport) else {
            return false;
        };
        let header = ip.header();
        header.source() == [10, 0, 2, 15]
            && header.destination() == [10, 0, 2, 2]
            && tcp.source_port() == 8080
            && tcp.destination_port() == port
            && tcp.rst()
            && tcp.ack()
            && tcp.acknowledgment_number() == SYN_SEQUENCE.wrapping_add(1)
    };
    frames.iter().filter(|frame| is_reset(frame)).count()
}

/// The gateway's MAC address in the guest's ARP table (scripts/qemu-guest.sh).
const GUEST_GATEWAY_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x02, 0x02];

/// The guest NIC's MAC address, QEMU's default for virtio-net-pci.
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// What a guest test adds to [`run_guest`]'s common setup.
#[derive(Default)]
struct GuestSetup<'a> {
    /// f0's properties to read at the end, besides its counters.
    extra: &'a [&'a str],
    /// A dgram netdev n1, attached to nothing, that the filter may
    /// redirect to.
    second_netdev: bool,
    /// Frames the host sends to the guest through n0, all of them every
    /// 200 ms from when its network is up until its pings are over.
    to_guest: &'a [Vec<u8>],
}

/// What a guest's run gave: its console, the filter's counters and the
/// other properties asked for, the frames of the dumps before and after
/// the filter, what the netdev sent, what the second netdev n1 sent when
/// there was one, and how many times the frames for the guest were sent.
struct GuestRun {
    log: String,
    counters: Counters,
    extra: Vec<u64>,
    seen: Vec<Vec<u8>>,
    passed: Vec<Vec<u8>>,
    out: Collector,
    redirected: Option<Collector>,
    rounds_to_guest: usize,
}

/// Boots the guest (scripts/qemu-guest.sh) with the filter object
/// `filter(netdev, queue)` (id f0) between two dumps on queue=rx, until it
/// has sent its pings, with what `setup` adds, and reads f0's counters and
/// the properties `setup` names; None when the test is skipped.
fn run_guest(test: &str, filter: impl Fn(&str, &str) -> String, setup: GuestSetup) -> Option<GuestRun> {
    let qemu = qemu_binary()?;
    let guest = required_path("QEMU_UBPF_GUEST", "scripts/qemu-guest.sh prepares the guest and prints its path")?;
    let dir = common::scratch_dir("qemu", test);
    let sockets = socket_dir();
    let (serial, before, after) = (dir.join("serial.log"), dir.join("before.pcap"), dir.join("after.pcap"));
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    let redirected = setup.second_netdev.then(|| UdpSocket::bind("127.0.0.1:0").unwrap());
    let (mut child, mut qmp, n0_port) = launch(&qemu, &sockets.join("qmp"), None, || {
        let n0_port = free_udp_port();
        let _ = std::fs::remove_file(&serial);
        let guest_file = |name: &str| guest.join(name).display().to_string();
        let mut args: Vec<String> = [
            "-M".into(),
            "pc".into(),
            "-accel".into(),
            "tcg".into(),
            "-m".into(),
            "256".into(),
            "-no-shutdown".into(),
            "-serial".into(),
            format!("file:{}", serial.display()),
            "-L".into(),
            guest_file("firmware"),
            "-kernel".into(),
            guest_file("vmlinuz"),
            "-initrd".into(),
            guest_file("initrd.gz"),
            "-append".into(),
            "console=ttyS0 quiet panic=-1".into(),
            "-netdev".into(),
            dgram_netdev("n0", n0_port, &out),
            "-device".into(),
            "virtio-net-pci,netdev=n0,romfile=".into(),
            // queue=rx: the packets the guest sends. Filters see them in the
            // reverse order of the list.
            "-object".into(),
            dump_object("after", "n0", "rx", &after),
            "-object".into(),
            filter("n0", "rx"),
            "-object".into(),
            dump_object("before", "n0", "rx", &before),
        ]
        .into();
        if let Some(socket) = &redirected {
            args.extend(["-netdev".into(), dgram_netdev("n1", free_udp_port(), socket)]);
        }
        (args, n0_port)
    });
    let to_n0 = out.try_clone().unwrap();
    let out = Collector::start(out);
    let redirected = redirected.map(Collector::start);
    let mut rounds_to_guest = 0;

    let deadline = Instant::now() + Duration::from_secs(180);
    let log = loop {
        let log = std::fs::read_to_string(&serial).unwrap_or_default();
        if log.contains("guest: pings sent") {
            break log;
        }
        assert!(Instant::now() < deadline, "the guest did not finish its pings; its console:\n{log}");
        assert!(child.try_wait().unwrap().is_none(), "QEMU exited; the guest's console:\n{log}");
        if !setup.to_guest.is_empty() && log.contains("guest: network up") {
            for frame in setup.to_guest {
                to_n0.send_to(frame, ("127.0.0.1", n0_port)).unwrap();
            }
            rounds_to_guest += 1;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let counters = Counters::of(&mut qmp, "f0");
    let extra = setup
        .extra
        .iter()
        .map(|name| qmp.get("/objects/f0", name).as_u64().unwrap_or_else(|| panic!("{name} is not a u64")))
        .collect();
    qmp.send(json!({ "execute": "quit" })).expect("QMP quit");
    assert!(child.wait().unwrap().success(), "QEMU's exit");
    let _ = std::fs::remove_dir_all(&sockets);
    assert!(log.contains("guest: network up"), "the guest's console:\n{log}");
    let (seen, passed) = (frames(&before), frames(&after));
    Some(GuestRun { log, counters, extra, seen, passed, out, redirected, rounds_to_guest })
}

/// The maps of filter `id`, from its `maps` property.
fn maps_of(qmp: &mut Qmp, id: &str) -> Value {
    let json = qmp.get(&format!("/objects/{id}"), "maps");
    let maps: Value = serde_json::from_str(json.as_str().expect("maps is a string")).expect("maps is JSON");
    maps["maps"].clone()
}

#[test]
fn maps_read_over_qmp_hold_what_replay_counts_and_survive_a_swap() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "maps_read_over_qmp_hold_what_replay_counts_and_survive_a_swap");
    let program = common::example("proto_counters");
    let capture = common::sample("ethernet.pcap");
    let (summary, _) = replay_summary(&dir, &program, &capture, &["--maps"]);
    let sent = frames(&capture);
    let twice_capture = dir.join("twice.pcap");
    write_pcap(&twice_capture, &[sent.clone(), sent.clone()].concat());
    let (twice, _) = replay_summary(&dir, &program, &twice_capture, &["--maps"]);
    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &program, "")]);
    rig.send_all("f0", &sent);
    assert_eq!(maps_of(&mut rig.qmp, "f0"), summary["maps"], "the counters over QMP against replay's");

    // The same object again: its map has the same name and shape, so the
    // counts carry over and go on from there.
    rig.qmp.set("/objects/f0", "ubpf-handler", json!(program)).expect("swap");
    rig.send_all("f0", &sent);
    assert_eq!(maps_of(&mut rig.qmp, "f0"), twice["maps"], "the counters after a swap and a second pass");
    rig.quit();
}

#[test]
fn map_update_over_qmp_changes_verdicts_as_replay_map_init_does() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "map_update_over_qmp_changes_verdicts_as_replay_map_init_does");
    let program = common::example("prefix_blocklist");
    let capture = common::sample("ethernet.pcap");
    let sent = frames(&capture);
    let blocklist = json!({ "blocklist": [{ "key": "1.1.1.0/24", "value": 3 }, { "key": "10.0.0.0/8", "value": 5 }] });
    let init = dir.join("blocklist.json");
    std::fs::write(&init, blocklist.to_string()).unwrap();
    let (empty, _) = replay(&dir, &program, &capture, &[]);
    let init_option = init.display().to_string();
    let (summary, blocked) = replay_summary(&dir, &program, &capture, &["--map-init", &init_option, "--maps"]);
    assert!(summary["dropped"].as_u64().unwrap() > 0, "the blocklist should drop some of the sample");

    // An empty blocklist, then the same entries over QMP.
    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &program, "")]);
    rig.send_all("f0", &sent);
    assert_eq!(Counters::of(&mut rig.qmp, "f0"), empty);
    rig.qmp.set("/objects/f0", "map-update", json!(blocklist.to_string())).expect("map-update");
    rig.send_all("f0", &sent);
    let after = Counters::of(&mut rig.qmp, "f0");
    assert_eq!(after.dropped - empty.dropped, summary["dropped"].as_u64().unwrap(), "{after:?}");
    let out = rig.collected(sent.len() + blocked.len());
    assert!(out[sent.len()..] == blocked[..], "with the blocklist, the frames replay --map-init passes");
    assert_eq!(maps_of(&mut rig.qmp, "f0"), summary["maps"], "the maps over QMP against replay's");

    let error = rig.qmp.set("/objects/f0", "map-update", json!("{\"nosuchmap\": []}")).unwrap_err();
    assert!(error["desc"].as_str().unwrap().contains("nosuchmap"), "{error}");
    rig.quit();

    // Given at creation, the entries are there before the first packet.
    let options = format!(",map-update={}", blocklist.to_string().replace(',', ",,"));
    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &program, &options)]);
    rig.send_all("f0", &sent);
    assert_eq!(Counters::of(&mut rig.qmp, "f0").dropped, summary["dropped"].as_u64().unwrap());
    rig.quit();
}

/// The maps of filter `id` from `query-filter-ubpf-maps`, in the form of
/// `qemu-ubpf replay --maps` (type names, snake_case sizes).
fn typed_maps_of(qmp: &mut Qmp, id: &str) -> Value {
    let maps = qmp.execute("query-filter-ubpf-maps", json!({ "id": id })).expect("query-filter-ubpf-maps");
    let type_name = |number: u64| match number {
        1 => "hash",
        2 => "array",
        11 => "lpm_trie",
        other => panic!("a map type this test does not name: {other}"),
    };
    maps.as_array()
        .expect("a list of maps")
        .iter()
        .map(|map| {
            json!({
                "name": map["name"],
                "type": type_name(map["type"].as_u64().unwrap()),
                "key_size": map["key-size"],
                "value_size": map["value-size"],
                "max_entries": map["max-entries"],
                "flags": map["flags"],
                "entries": map["entries"],
            })
        })
        .collect()
}

/// The typed QMP commands: entries stored one by one with
/// `filter-ubpf-map-update` drop what replay drops with the same entries
/// from `--map-init`, `query-filter-ubpf-maps` gives replay's `--maps`,
/// and `filter-ubpf-map-delete` empties the blocklist again.
#[test]
fn typed_map_commands_over_qmp_agree_with_replay() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "typed_map_commands_over_qmp_agree_with_replay");
    let program = common::example("prefix_blocklist");
    let capture = common::sample("ethernet.pcap");
    let sent = frames(&capture);
    let init = common::root().join("examples/prefix_blocklist.json");
    let init_option = init.display().to_string();
    let (empty, _) = replay(&dir, &program, &capture, &[]);
    let (summary, blocked) = replay_summary(&dir, &program, &capture, &["--map-init", &init_option, "--maps"]);
    let (with_blocklist, _) = replay(&dir, &program, &capture, &["--map-init", &init_option]);
    let blocklist =
        summary["maps"].as_array().unwrap().iter().find(|map| map["name"] == "blocklist").expect("replay's blocklist")
            ["entries"]
            .as_array()
            .unwrap()
            .clone();
    assert!(blocklist.len() >= 2 && with_blocklist.dropped > empty.dropped, "{summary}");

    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &program, "")]);
    for entry in &blocklist {
        rig.qmp
            .execute(
                "filter-ubpf-map-update",
                json!({ "id": "f0", "map": "blocklist", "key": entry["key"], "value": entry["value"] }),
            )
            .unwrap_or_else(|e| panic!("filter-ubpf-map-update {entry}: {e}"));
    }
    rig.send_all("f0", &sent);
    assert_eq!(Counters::of(&mut rig.qmp, "f0"), with_blocklist, "the typed entries drop what --map-init's do");
    assert!(rig.collected(blocked.len()) == blocked, "the frames out are those replay --map-init passes");
    assert_eq!(typed_maps_of(&mut rig.qmp, "f0"), summary["maps"], "query-filter-ubpf-maps against replay --maps");

    for entry in &blocklist {
        let key = &entry["key"];
        rig.qmp
            .execute("filter-ubpf-map-delete", json!({ "id": "f0", "map": "blocklist", "key": key }))
            .unwrap_or_else(|e| panic!("filter-ubpf-map-delete {key}: {e}"));
    }
    rig.send_all("f0", &sent);
    let after = Counters::of(&mut rig.qmp, "f0");
    assert_eq!(after.dropped - with_blocklist.dropped, empty.dropped, "an empty blocklist again: {after:?}");

    let missing = rig
        .qmp
        .execute("filter-ubpf-map-delete", json!({ "id": "f0", "map": "blocklist", "key": blocklist[0]["key"] }))
        .expect_err("deleting a key twice");
    assert!(missing["desc"].as_str().unwrap().contains("no such key"), "{missing}");
    let short = rig
        .qmp
        .execute("filter-ubpf-map-update", json!({ "id": "f0", "map": "blocklist", "key": "18", "value": "01000000" }))
        .expect_err("a key of the wrong size");
    assert!(short["desc"].as_str().unwrap().contains("8 bytes"), "{short}");
    let no_map = rig
        .qmp
        .execute("query-filter-ubpf-maps", json!({ "id": "nosuchfilter" }))
        .expect_err("an id that is no filter");
    assert_eq!(no_map["class"], "GenericError", "{no_map}");
    rig.quit();
}

/// valgrind's leak summary of a run: bytes definitely lost and the number
/// of errors (invalid accesses, uses of uninitialised memory, and definite
/// leaks).
fn valgrind_summary(log: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(log).unwrap();
    let number = |label: &str| {
        let line = text.lines().find(|line| line.contains(label)).unwrap_or_else(|| panic!("{label} in:\n{text}"));
        let field = line.split(label).nth(1).unwrap().split_whitespace().next().unwrap();
        field.replace(',', "").parse::<u64>().unwrap()
    };
    let lost = if text.contains("definitely lost:") { number("definitely lost:") } else { 0 };
    (lost, number("ERROR SUMMARY:"))
}

/// Whether valgrind is installed; its absence is a missing prerequisite.
fn valgrind_installed() -> bool {
    let installed = Command::new("valgrind").arg("--version").output().is_ok();
    if !installed {
        common::missing_prerequisite("valgrind is not installed");
    }
    installed
}

/// Writes at `wrapper` a script that runs `qemu` under valgrind, its report
/// in `log`, and returns the script's path.
fn under_valgrind(qemu: &Path, wrapper: &Path, log: &Path) -> PathBuf {
    std::fs::write(
        wrapper,
        format!(
            "#!/bin/sh\nexec valgrind --log-file={} --leak-check=full --errors-for-leak-kinds=definite {} \"$@\"\n",
            log.display(),
            qemu.display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(wrapper, permissions).unwrap();
    wrapper.to_path_buf()
}

/// QEMU under valgrind, filtering the sample once and then ten times: no
/// invalid access, and memory lost does not grow with the packets.
#[test]
fn no_per_packet_leak_or_invalid_access_under_valgrind() {
    let Some(qemu) = qemu_binary() else { return };
    if !valgrind_installed() {
        return;
    }
    let dir = common::scratch_dir("qemu", "no_per_packet_leak_or_invalid_access_under_valgrind");
    let sent = frames(&common::sample("ethernet.pcap"));
    let rfc = common::example("drop_1_1_1_1");
    let mut summaries = Vec::new();
    for rounds in [1, 10] {
        let log = dir.join(format!("valgrind-{rounds}.log"));
        let wrapper = under_valgrind(&qemu, &dir.join(format!("qemu-{rounds}")), &log);
        let mut rig = Rig::start(&wrapper, &[filter_object("f0", "n1", "tx", &rfc, "")]);
        for _ in 0..rounds {
            rig.send_all("f0", &sent);
        }
        assert_eq!(Counters::of(&mut rig.qmp, "f0").seen(), (rounds * sent.len()) as u64);
        rig.quit();
        summaries.push(valgrind_summary(&log));
    }
    let (lost_once, errors_once) = summaries[0];
    let (lost_ten_times, errors_ten_times) = summaries[1];
    assert_eq!((errors_once, errors_ten_times), (0, 0), "valgrind errors; see {}", dir.display());
    assert_eq!(lost_once, lost_ten_times, "memory lost grows with the packets");
}

/// A map example in QEMU and in replay over the sample: the same frames
/// pass, the counters agree and the maps hold the same entries.
fn map_example_like_replay(test: &str, name: &str, qemu_options: &str, replay_options: &[&str]) {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", test);
    let program = common::example(name);
    let capture = common::sample("ethernet.pcap");
    let sent = frames(&capture);
    let (summary, passed) = replay_summary(&dir, &program, &capture, &[replay_options, &["--maps"]].concat());
    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &program, qemu_options)]);
    rig.send_all("f0", &sent);
    let counters = Counters::of(&mut rig.qmp, "f0");
    let maps = maps_of(&mut rig.qmp, "f0");
    let out = rig.collected(passed.len());
    rig.quit();
    let count = |name: &str| summary[name].as_u64().unwrap();
    assert_eq!(
        (counters.passed, counters.dropped, counters.errors),
        (count("passed"), count("dropped"), count("errors")),
        "{name}: QEMU's counters against replay's"
    );
    assert!(out == passed, "{name}: the frames out of n2 differ from those replay passes");
    assert_eq!(maps, summary["maps"], "{name}: the maps over QMP against replay's");
}

#[test]
fn proto_counters_in_qemu_as_in_replay() {
    map_example_like_replay("proto_counters_in_qemu_as_in_replay", "proto_counters", "", &[]);
}

#[test]
fn top_talkers_in_qemu_as_in_replay() {
    map_example_like_replay("top_talkers_in_qemu_as_in_replay", "top_talkers", ",jit=off", &["--engine", "interp"]);
}

#[test]
fn prefix_blocklist_in_qemu_as_in_replay() {
    let init = common::root().join("examples/prefix_blocklist.json");
    let json = std::fs::read_to_string(&init).unwrap().replace('\n', " ");
    let options = format!(",map-update={}", json.replace(',', ",,"));
    let init_option = init.display().to_string();
    map_example_like_replay(
        "prefix_blocklist_in_qemu_as_in_replay",
        "prefix_blocklist",
        &options,
        &["--map-init", &init_option],
    );
}

/// An XDP example in QEMU and in replay over the sample, with the map
/// entries of `init` (a `--map-init` file under examples/xdp) if any: the
/// runs by action, the faults (the sample's 10-byte frame, which XDP does
/// not run on), the frames passed as the program left them and the maps
/// all agree.
fn xdp_example_like_replay(test: &str, name: &str, init: Option<&str>) {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", test);
    let program = common::example(&format!("xdp/{name}"));
    let capture = common::sample("ethernet.pcap");
    let sent = frames(&capture);
    let init = init.map(|file| common::root().join("examples/xdp").join(file));
    let init_option = init.as_ref().map(|path| path.display().to_string());
    let mut replay_options = vec!["--maps"];
    let mut qemu_options = String::new();
    if let (Some(path), Some(option)) = (&init, &init_option) {
        let json = std::fs::read_to_string(path).unwrap().replace('\n', " ");
        qemu_options = format!(",map-update={}", json.replace(',', ",,"));
        replay_options.extend(["--map-init", option]);
    }
    let (summary, passed) = replay_summary(&dir, &program, &capture, &replay_options);
    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &program, &qemu_options)]);
    rig.send_all("f0", &sent);
    let counters = Counters::of(&mut rig.qmp, "f0");
    let names = ["aborted", "drop", "pass", "tx", "redirect"];
    let actions: Vec<u64> =
        names.iter().map(|action| rig.qmp.get("/objects/f0", &format!("xdp-{action}")).as_u64().unwrap()).collect();
    let maps = maps_of(&mut rig.qmp, "f0");
    let out = rig.collected(passed.len());
    rig.quit();
    let replay_actions: Vec<u64> = names.iter().map(|action| summary["actions"][action].as_u64().unwrap()).collect();
    assert_eq!(actions, replay_actions, "{name}: QEMU's runs by action against replay's");
    let faults = summary["faults"].as_u64().unwrap();
    assert_eq!(counters.errors, faults + replay_actions[0], "{name}: faults and aborted runs: {counters:?}");
    assert_eq!(counters.seen(), sent.len() as u64, "{name}: {counters:?}");
    assert!(out == passed, "{name}: the frames out of n2 differ from those replay passes");
    assert_eq!(maps, summary["maps"], "{name}: the maps over QMP against replay's");
}

#[test]
fn xdp_vlan_pop_in_qemu_as_in_replay() {
    xdp_example_like_replay("xdp_vlan_pop_in_qemu_as_in_replay", "vlan_pop", None);
}

#[test]
fn xdp_truncate_in_qemu_as_in_replay() {
    xdp_example_like_replay("xdp_truncate_in_qemu_as_in_replay", "truncate", Some("truncate.json"));
}

#[test]
fn xdp_dnat_in_qemu_as_in_replay() {
    xdp_example_like_replay("xdp_dnat_in_qemu_as_in_replay", "dnat", Some("dnat.json"));
}

#[test]
fn dispatcher_with_tail_calls_in_qemu_as_in_replay() {
    map_example_like_replay(
        "dispatcher_with_tail_calls_in_qemu_as_in_replay",
        "dispatcher",
        ",program=dispatch",
        &["--program", "dispatch"],
    );
}

/// The SYN limiter follows the clock, which in QEMU is the host's, not the
/// capture's: its verdicts may differ from replay's, but it runs without a
/// fault and keeps state per source.
#[test]
fn syn_limiter_runs_in_qemu_and_keeps_state() {
    let Some(qemu) = qemu_binary() else { return };
    let program = common::example("syn_limiter");
    let sent = frames(&common::sample("ethernet.pcap"));
    let mut rig = Rig::start(&qemu, &[filter_object("f0", "n1", "tx", &program, "")]);
    rig.send_all("f0", &sent);
    let counters = Counters::of(&mut rig.qmp, "f0");
    let maps = maps_of(&mut rig.qmp, "f0");
    rig.quit();
    assert_eq!((counters.seen(), counters.errors), (sent.len() as u64, 0), "{counters:?}");
    let entries: usize = maps.as_array().unwrap().iter().map(|map| map["entries"].as_array().unwrap().len()).sum();
    assert!(entries > 0, "the limiter keeps no state: {maps}");
}

/// What a soak run saw: swaps done and failed as intended, frames sent, and
/// QEMU's resident memory sampled once a second, in KiB.
struct Soak {
    swaps: usize,
    sent: u64,
    counters: Counters,
    rss_kib: Vec<u64>,
}

/// QEMU's resident set size, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Drives the RFC example on n1's tx queue for `duration` with frames of
/// the sample, as fast as the rig takes them, while the program is swapped
/// every 10 ms: reloaded, moved to the interpreter, a load that fails, moved
/// back to the JIT. Every swap keeps the verdicts, so each frame's fate is
/// known: the frames out of n2 must be, in order, exactly those the example
/// passes. At most `WINDOW` frames are in flight, so no socket buffer
/// overflows and a lost frame stalls the run and fails it.
fn soak(qemu: &Path, dir: &Path, duration: Duration) -> Soak {
    const WINDOW: u64 = 64;
    let rfc = common::example("drop_1_1_1_1");
    let all = frames(&common::sample("ethernet.pcap"));
    let (_, passed) = to_1_1_1_1(dir);
    let passes: Vec<bool> = all.iter().map(|frame| passed.contains(frame)).collect();
    let rig = Rig::start(qemu, &[filter_object("f0", "n1", "tx", &rfc, "")]);
    let pid = rig.child.id();

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (inject, n1) = (rig.inject.try_clone().unwrap(), rig.n1);
        let received = rig.out.frames.clone();
        let stop = stop.clone();
        thread::spawn(move || -> Result<(u64, u64), String> {
            let (mut sent, mut dropped, mut checked) = (0u64, 0u64, 0u64);
            // The index in `all` of the next frame that must come out.
            let mut next_out = passes.iter().position(|&pass| pass).unwrap();
            let mut progress = Instant::now();
            loop {
                let arrived = std::mem::take(&mut *received.lock().unwrap());
                for frame in arrived {
                    if frame != all[next_out] {
                        return Err(format!("frame {checked} out of n2 is not the next frame the example passes"));
                    }
                    checked += 1;
                    next_out = (next_out + 1..).map(|i| i % all.len()).find(|&i| passes[i]).unwrap();
                    progress = Instant::now();
                }
                let in_flight = sent - dropped - checked;
                let stopping = stop.load(Ordering::Relaxed);
                if stopping && in_flight == 0 {
                    return Ok((sent, checked));
                }
                if stopping || in_flight >= WINDOW {
                    if progress.elapsed() > Duration::from_secs(10) {
                        return Err(format!("no frame for 10 s: {sent} sent, {dropped} dropped, {checked} out"));
                    }
                    thread::yield_now();
                    continue;
                }
                let index = (sent % all.len() as u64) as usize;
                inject.send_to(&all[index], ("127.0.0.1", n1)).unwrap();
                sent += 1;
                dropped += u64::from(!passes[index]);
            }
        })
    };

    let mut rig = rig;
    let (start, mut sampled) = (Instant::now(), Instant::now());
    let mut rss_kib = vec![resident_kib(pid)];
    let mut swaps = 0;
    while start.elapsed() < duration && !traffic.is_finished() {
        match swaps % 4 {
            0 => rig.qmp.set("/objects/f0", "ubpf-handler", json!(rfc)).expect("reload"),
            1 => rig.qmp.set("/objects/f0", "jit", json!(false)).expect("to the interpreter"),
            2 => {
                let error = rig.qmp.set("/objects/f0", "ubpf-handler", json!("/nonexistent/prog.o")).unwrap_err();
                assert_eq!(error["class"], "GenericError", "{error}");
                json!({})
            }
            _ => rig.qmp.set("/objects/f0", "jit", json!(true)).expect("to the JIT"),
        };
        swaps += 1;
        if sampled.elapsed() >= Duration::from_secs(1) {
            rss_kib.push(resident_kib(pid));
            sampled = Instant::now();
        }
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, out) = traffic.join().unwrap().unwrap_or_else(|error| panic!("after {swaps} swaps: {error}"));
    let counters = rig.wait_seen("f0", sent);
    rss_kib.push(resident_kib(pid));
    rig.quit();
    assert_eq!(counters.passed, out, "frames passed = frames out of n2: {counters:?}");
    Soak { swaps, sent, counters, rss_kib }
}

/// The soak's length: QEMU_UBPF_SOAK_SECONDS (`scripts/soak.sh` gives 60),
/// or 10 s, CI's short form.
fn soak_duration() -> Duration {
    let seconds = std::env::var("QEMU_UBPF_SOAK_SECONDS").map_or(10, |s| s.parse().expect("QEMU_UBPF_SOAK_SECONDS"));
    Duration::from_secs(seconds)
}

#[test]
fn soak_with_swaps_every_10_ms_accounts_for_every_frame_and_keeps_memory_flat() {
    let Some(qemu) = qemu_binary() else { return };
    let dir = common::scratch_dir("qemu", "soak_with_swaps_every_10_ms_accounts_for_every_frame_and_keeps_memory_flat");
    let duration = soak_duration();
    let run = soak(&qemu, &dir, duration);
    let Soak { swaps, sent, counters, ref rss_kib } = run;
    eprintln!(
        "soak: {:.0} s, {sent} frames ({:.0}/s), {swaps} swaps, {counters:?}, RSS KiB each second: {rss_kib:?}",
        duration.as_secs_f64(),
        sent as f64 / duration.as_secs_f64()
    );
    assert!(swaps as f64 >= duration.as_secs_f64() * 40.0, "only {swaps} swaps in {duration:?}");
    assert_eq!(counters.seen(), sent, "frames in = passed + dropped: {counters:?}");
    assert_eq!(counters.errors, 0);
    // After the first few seconds (allocator and JIT pools warm), memory
    // stays within 8 MiB of what it was then, swap after swap.
    let settled = rss_kib[rss_kib.len().min(4) - 1];
    let peak = *rss_kib.iter().skip(4).max().unwrap_or(&settled);
    assert!(peak <= settled + 8 * 1024, "QEMU's RSS grew from {settled} KiB to {peak} KiB: {rss_kib:?}");
}

/// The soak, shorter, with QEMU under valgrind: no invalid access, and
/// memory lost does not grow with the swaps and frames of a run three times
/// as long.
#[test]
fn soak_under_valgrind_loses_no_memory_per_swap() {
    let Some(qemu) = qemu_binary() else { return };
    if !valgrind_installed() {
        return;
    }
    let dir = common::scratch_dir("qemu", "soak_under_valgrind_loses_no_memory_per_swap");
    let mut summaries = Vec::new();
    for seconds in [2, 6] {
        let log = dir.join(format!("valgrind-{seconds}.log"));
        let wrapper = under_valgrind(&qemu, &dir.join(format!("qemu-{seconds}")), &log);
        let run = soak(&wrapper, &dir, Duration::from_secs(seconds));
        eprintln!("soak under valgrind: {seconds} s, {} frames, {} swaps", run.sent, run.swaps);
        assert!(run.swaps >= 8, "only {} swaps in {seconds} s", run.swaps);
        summaries.push(valgrind_summary(&log));
    }
    let [(lost_short, errors_short), (lost_long, errors_long)] = summaries[..] else { unreachable!() };
    assert_eq!((errors_short, errors_long), (0, 0), "valgrind errors; see {}", dir.display());
    assert_eq!(lost_short, lost_long, "memory lost grows with the swaps");
}
