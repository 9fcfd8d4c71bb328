//! Test support: the `fulmar` binary as a broker, `pub` and `sub` processes,
//! and a mosquitto broker, all on ephemeral loopback ports.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The `fulmar` binary, without RUST_LOG from the environment, in a fresh
/// working directory (a broker keeps its default store, `fulmar-data`, there).
pub fn fulmar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulmar"));
    cmd.env_remove("RUST_LOG");
    cmd.stdin(Stdio::null());
    cmd.current_dir(temp_dir());
    cmd
}

/// A fresh directory for one test, under [`test_root`].
pub fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = test_root().join(N.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// This process's directory under the system temp dir, which holds every
/// [`temp_dir`]: removed when the process exits (a test binary runs
/// hundreds of brokers and clients, each in a directory of its own). The
/// first call also removes the directories of earlier test processes that
/// died without cleaning up (killed, or a CI job stopped).
pub fn test_root() -> &'static Path {
    ROOT.get_or_init(|| {
        let temp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&temp) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let pid = name.to_str().and_then(|n| n.strip_prefix(ROOT_PREFIX));
                if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let root = temp.join(format!("{ROOT_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        register_cleanup();
        root
    })
}

const ROOT_PREFIX: &str = "fulmar-cli-test-";
static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Removes [`ROOT`] when the process exits: the test harness returns from
/// `main` or calls `exit`, which runs the C library's exit handlers.
#[allow(unsafe_code)] // `atexit` is the only way to run code at exit
fn register_cleanup() {
    extern "C" fn remove_root() {
        if let Some(root) = ROOT.get() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
    // SAFETY: `remove_root` is a plain function that lives as long as the
    // process; it does not unwind (`remove_dir_all` reports errors, which
    // are ignored).
    unsafe {
        libc::atexit(remove_root);
    }
}

/// Reads `stderr` line by line until one contains `needle`; returns that
/// line and keeps draining the rest in a thread (so the child never blocks
/// on a full pipe). Panics with what was read if the stream ends first.
pub fn wait_for_line(stderr: ChildStderr, needle: &str) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(needle) => {
                std::thread::spawn(move || for _ in lines.by_ref() {});
                return line;
            }
            Some(Ok(line)) => seen.push(line),
            _ => panic!(
                "process ended before printing {needle:?}:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// As [`wait_for_line`], and keeps the rest of stderr: the thread's result
/// is everything read after that line, to the end.
#[allow(dead_code)] // not every test binary uses it
pub fn wait_for_line_and_keep(
    stderr: ChildStderr,
    needle: &str,
) -> std::thread::JoinHandle<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(needle) => {
                return std::thread::spawn(move || {
                    lines.map_while(Result::ok).collect::<Vec<_>>().join("\n")
                });
            }
            Some(Ok(line)) => seen.push(line),
            _ => panic!(
                "process ended before printing {needle:?}:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Waits for `child` to exit, for `limit` at most (then kills it and panics).
#[allow(dead_code)] // not every test binary uses it
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let until = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends signal `name` (`HUP`, `INT`, `TERM`) to process `pid`, through the
/// shell's `kill` builtin: a bare machine may have no `/bin/kill` (procps).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -s {name} {pid}")])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {name} {pid}: {status:?}");
}

/// A `fulmar broker` process, killed on drop.
pub struct FulmarBroker {
    child: Child,
    pub port: u16,
    /// The line that announced the listener.
    pub line: String,
    /// The rest of its stderr, line by line.
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl FulmarBroker {
    /// `fulmar broker -p 0` plus `args`.
    pub fn start(args: &[&str]) -> Self {
        let mut cmd = fulmar();
        cmd.args(["broker", "-p", "0"]).args(args);
        Self::run(cmd)
    }

    /// `fulmar broker -p PORT` plus `args` (a broker started again where
    /// another one was).
    pub fn start_on(port: u16, args: &[&str]) -> Self {
        let mut cmd = fulmar();
        cmd.args(["broker", "-p", &port.to_string()]).args(args);
        Self::run(cmd)
    }

    /// [`start`](Self::start) with a soft limit of `soft` open files (the
    /// shell's `ulimit -Sn`).
    #[cfg(unix)]
    pub fn start_with_open_files(soft: u64, args: &[&str]) -> Self {
        let mut cmd = Command::new("sh");
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .current_dir(temp_dir())
            .arg("-c")
            .arg(format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_fulmar"))
            .args(["broker", "-p", "0"])
            .args(args);
        Self::run(cmd)
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn run(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Keep draining after the test stopped listening.
                let _ = tx.send(line);
            }
        });
        let mut broker = Self {
            child,
            port: 0,
            line: String::new(),
            lines,
            seen: Vec::new(),
        };
        let line = broker.wait_for("listening on ");
        let addr = line.rsplit("listening on ").next().unwrap();
        let port = addr
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("no port in {line:?}: {e}"));
        broker.port = port;
        broker.line = line;
        broker
    }

    /// Every stderr line so far (for a failing test's message).
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Sends SIGHUP (reload the password and ACL files, the certificates).
    #[cfg(unix)]
    pub fn hangup(&self) {
        signal(self.child.id(), "HUP");
    }

    /// SIGKILL: the process dies at once, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The next stderr line containing `needle` (a line already read counts).
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("broker printed no {needle:?}:\n{}", self.seen.join("\n")),
            }
        }
    }
}

impl Drop for FulmarBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `fulmar sub` that has received its SUBACK.
pub struct Sub {
    child: Child,
}

impl Sub {
    /// `fulmar sub -h 127.0.0.1 -p PORT -d -W 30` plus `args`; returns once
    /// it printed its subscription (`-W 30` only keeps a broken test from
    /// hanging).
    pub fn start(port: u16, args: &[&str]) -> Self {
        let mut child = fulmar()
            .args(["sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-d"])
            .args(["-W", "30"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_line(child.stderr.take().unwrap(), "subscribed to ");
        Self { child }
    }

    /// Its stdout if it has exited (successfully) by now.
    pub fn try_output(&mut self) -> Option<String> {
        self.child.try_wait().unwrap()?;
        Some(self.read_output())
    }

    /// Reads stdout to the end, waits for the exit, asserts success.
    fn read_output(&mut self) -> String {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "fulmar sub: {status:?}, stdout {out:?}");
        out
    }

    /// Waits for the process to exit (it must have been given -C) and
    /// returns its stdout.
    pub fn output(mut self) -> String {
        self.read_output()
    }

    /// Like [`Sub::output`], for payloads that are not UTF-8.
    pub fn output_bytes(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "fulmar sub: {status:?}, stdout {out:?}");
        out
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `fulmar pub -h 127.0.0.1 -p PORT` plus `args` to completion.
pub fn publish(port: u16, args: &[&str]) -> Output {
    fulmar()
        .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap()
}

/// Like [`publish`], and asserts success.
pub fn publish_ok(port: u16, args: &[&str]) {
    let out = publish(port, args);
    assert!(
        out.status.success(),
        "fulmar pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `fulmar sub -h 127.0.0.1 -p PORT -W 30` plus `args` to completion.
pub fn subscribe(port: u16, args: &[&str]) -> Output {
    fulmar()
        .args([
            "sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-W",
            "30",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Path of a mosquitto tool: the broker lives in /usr/sbin on Debian.
pub fn mosquitto_tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{name} is not installed: these tests need the Debian packages `mosquitto` and \
         `mosquitto-clients` (scripts/test.sh installs them)"
    );
}

/// A mosquitto broker, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
}

impl Mosquitto {
    /// mosquitto with the configuration file `conf`, which must make it
    /// listen on 127.0.0.1:`port` (`user root` is added when run as root).
    pub fn with_config(conf: &Path, port: u16) -> Self {
        if is_root() {
            let mut text = std::fs::read_to_string(conf).unwrap();
            text.push_str("\nuser root\n");
            std::fs::write(conf, text).unwrap();
        }
        Self::spawn(conf, port)
            .unwrap_or_else(|| panic!("mosquitto -c {} did not start", conf.display()))
    }

    /// Runs mosquitto with `conf` and waits until it accepts connections on
    /// `port`; `None` if it exited first (the port was taken, say).
    fn spawn(conf: &Path, port: u16) -> Option<Self> {
        let mut child = Command::new(mosquitto_tool("mosquitto"))
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { child, port });
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn start() -> Self {
        let dir = temp_dir();
        for _ in 0..5 {
            let port = free_port();
            let mut config = format!(
                "allow_anonymous true\npersistence false\nlog_dest stderr\n\
                 log_type error\nlistener {port} 127.0.0.1\n"
            );
            if is_root() {
                config.push_str("user root\n");
            }
            let conf = dir.join("mosquitto.conf");
            std::fs::write(&conf, config).unwrap();
            if let Some(mosquitto) = Self::spawn(&conf, port) {
                return mosquitto;
            }
        }
        panic!("mosquitto did not start");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
