//! `fulmar bench` against `fulmar broker` and the Debian `mosquitto`, both
//! started here on free loopback ports: a count-based run (2000 messages per
//! publisher) must report zero lost QoS 1/2 messages and no QoS 2 duplicate.
//! No timing assertions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;

/// A broker process, killed on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `child` (stderr piped) and blocks until a stderr line contains
/// `needle`; returns that line, or `None` when the process ended first. The
/// rest of stderr is drained in a thread.
fn wait_for_line(child: &mut Child, needle: &'static str) -> Option<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !found && line.contains(needle) {
                found = true;
                let _ = tx.send(line);
            }
        }
    });
    rx.recv().ok()
}

/// The `fulmar` binary in a fresh working directory (for the broker's store).
fn fulmar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulmar"));
    let dir = common::temp_dir();
    cmd.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .current_dir(dir);
    cmd
}

fn start_fulmar() -> Broker {
    start_fulmar_with(&[])
}

/// `fulmar broker -p 0` plus `args`.
fn start_fulmar_with(args: &[&std::ffi::OsStr]) -> Broker {
    let mut child = fulmar()
        .args(["broker", "-p", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fulmar broker");
    let line = wait_for_line(&mut child, "listening on").expect("fulmar broker did not start");
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Broker { child, port }
}

fn mosquitto_binary() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is not installed (Debian package `mosquitto`): this test needs it")
}

fn start_mosquitto() -> Broker {
    let binary = mosquitto_binary();
    // One directory per call: tests run in parallel in this process, and a
    // shared config file name would let one test's mosquitto read another's port.
    let dir = common::temp_dir();
    for attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join(format!("mosquitto-{attempt}.conf"));
        // `max_queued_messages 0`: mosquitto's default (1000 per client
        // beyond the 20 in flight) drops acknowledged QoS 1/2 messages for a
        // subscriber that falls behind, which a loaded CI machine makes
        // happen (176 of 4000 once); the test is about the bench counting,
        // not about mosquitto's queue limit.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\n\
                 log_dest stderr\nlog_type error\nlog_type information\nuser root\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mosquitto");
        // Logged once every listener is open; a taken port ends the process instead.
        if wait_for_line(&mut child, " running").is_some() {
            return Broker { child, port };
        }
        let _ = child.wait();
    }
    panic!("mosquitto did not start");
}

/// Runs `fulmar bench --json` with `args` against `port`.
fn bench(port: u16, args: &[&str]) -> Value {
    let output = fulmar()
        .args(["bench", "--json", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run fulmar bench");
    assert!(
        output.status.success(),
        "fulmar bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "bench output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Two publishers (one QoS 1, one QoS 2), two subscribers on `fulmar-bench/#`:
/// every acknowledged message reaches both subscribers, QoS 2 exactly once.
fn assert_no_loss(port: u16, mqtt: &str) {
    let report = bench(
        port,
        &[
            "--mqtt", mqtt, "-P", "2", "-S", "2", "-q", "1,2", "-n", "2000", "-s", "100",
        ],
    );
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["sent"], 4000, "{report:#}");
    let qos = report["qos"].as_array().unwrap();
    assert_eq!(qos.len(), 2, "{report:#}");
    for counts in qos {
        assert_eq!(counts["sent"], 2000, "{counts}");
        assert_eq!(counts["acked"], 2000, "{counts}");
        assert_eq!(counts["expected"], 4000, "{counts}");
        assert_eq!(counts["received"], 4000, "{counts}");
        assert_eq!(counts["lost"], 0, "{counts}");
    }
    assert_eq!(qos[1]["qos"], 2);
    assert_eq!(qos[1]["duplicated"], 0, "QoS 2 delivered twice: {report:#}");
    assert_eq!(report["latency"]["count"], 8000, "{report:#}");
}

#[test]
fn fulmar_broker_v5_loses_no_qos12_message() {
    // v5:MQTT-4.3.2-4 v5:MQTT-4.3.3-8 (the broker acknowledged, so it owns and delivers)
    let broker = start_fulmar();
    assert_no_loss(broker.port, "5");
}

#[test]
fn fulmar_broker_v311_loses_no_qos12_message() {
    // v3:MQTT-4.3.2-2 v3:MQTT-4.3.3-2
    let broker = start_fulmar();
    assert_no_loss(broker.port, "3.1.1");
}

/// Payloads large enough to be written from their own buffers (vectored,
/// after the encoded header), reused once acknowledged, and read into
/// buffers reserved whole: nothing lost, nothing garbled.
#[test]
fn large_payloads_arrive_whole() {
    // MQTT-4.3.2-2 MQTT-4.3.3-2 (every acknowledged message reaches both subscribers)
    let broker = start_fulmar();
    let report = bench(
        broker.port,
        &[
            "-P", "2", "-S", "2", "-q", "1,2", "-n", "150", "-s", "300000",
        ],
    );
    assert_eq!(report["errors"], 0, "{report:#}");
    for counts in report["qos"].as_array().unwrap() {
        assert_eq!(counts["acked"], 150, "{counts}");
        assert_eq!(counts["received"], 300, "{counts}");
        assert_eq!(counts["lost"], 0, "{counts}");
        assert_eq!(counts["duplicated"], 0, "{counts}");
    }
    // Every delivery carried our header where it belongs (a message with
    // its bytes out of order would not count).
    assert_eq!(report["latency"]["count"], 600, "{report:#}");
}

#[test]
fn mosquitto_v5_loses_no_qos12_message() {
    let broker = start_mosquitto();
    assert_no_loss(broker.port, "5");
}

#[test]
fn mosquitto_v311_loses_no_qos12_message() {
    let broker = start_mosquitto();
    assert_no_loss(broker.port, "3.1.1");
}

#[test]
fn csv_and_plot_outputs() {
    let broker = start_fulmar();
    let dir = common::temp_dir();
    let svg = dir.join("out.svg");
    let output = fulmar()
        .args(["bench", "--csv", "-p", &broker.port.to_string()])
        .args(["--broker-pid", &broker.child.id().to_string()])
        .args(["-q", "1", "-n", "500", "--idle", "10", "--plot"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = String::from_utf8(output.stdout).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.len(), row.len());
    let field = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(field("idle"), "10");
    assert_eq!(field("sent"), "500");
    assert_eq!(field("qos1_lost"), "0");
    assert_eq!(field("measured_sent"), "500");
    assert_eq!(field("measured_received"), "500");
    assert_eq!(field("unsent_due"), "0");
    // The broker's and the load generator's CPU time, last.
    assert_eq!(header.last(), Some(&"bench_cpu_us_per_msg"));
    for who in ["broker", "bench"] {
        for column in ["cpu_user_s", "cpu_system_s", "cpu_us_per_msg"] {
            let value = field(&format!("{who}_{column}"));
            let seconds: f64 = value.parse().unwrap_or(-1.0);
            assert!(seconds >= 0.0, "{who}_{column} = {value:?}");
        }
    }
    assert!(field("broker_bytes_per_connection").parse::<f64>().is_ok());
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("latency") && svg.contains("throughput"));
}

#[test]
fn unreachable_broker_fails_clearly() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = fulmar()
        .args(["bench", "-p", &port.to_string(), "-n", "10"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connections failed"), "{stderr}");
}

/// A retained message on a bench topic that is not a bench payload (it is
/// long enough to have passed for a header once) is counted as foreign: it
/// neither aborts the run nor counts as a delivery.
#[test]
fn a_foreign_retained_payload_is_counted_apart() {
    let broker = start_fulmar();
    let output = fulmar()
        .args(["pub", "-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "fulmar-bench/x", "-r", "-q", "1"])
        .args(["-m", "this is definitely not a bench payload"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report = bench(broker.port, &["-q", "1", "-n", "10"]);
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["foreign"], 1, "{report:#}");
    let qos = &report["qos"][0];
    assert_eq!(qos["received"], 10, "{report:#}");
    assert_eq!(qos["lost"], 0, "{report:#}");
    assert_eq!(qos["duplicated"], 0, "{report:#}");
    assert_eq!(report["latency"]["count"], 10, "{report:#}");
}

/// `--persistent` subscribers end their sessions when the run ends (5.0: a
/// DISCONNECT with Session Expiry Interval 0; 3.1.1: a clean-session
/// reconnect), so that no session subscribed to `fulmar-bench/#` stays on
/// the broker: `$SYS/broker/clients/total` (every session, connected or
/// not) falls back to the observer's own.
#[test]
fn persistent_sessions_are_ended_after_the_run() {
    let dir = common::temp_dir();
    let conf = dir.join("fulmar.toml");
    std::fs::write(&conf, "[sys]\ninterval_secs = 1\n").unwrap();
    let broker = start_fulmar_with(&["-c".as_ref(), conf.as_os_str()]);
    let port = broker.port.to_string();
    for mqtt in ["5", "3.1.1"] {
        let report = bench(
            broker.port,
            &[
                "--mqtt",
                mqtt,
                "--persistent",
                "-S",
                "2",
                "-q",
                "1",
                "-n",
                "50",
            ],
        );
        assert_eq!(report["errors"], 0, "{report:#}");
        assert_eq!(report["qos"][0]["lost"], 0, "{report:#}");
        // `$SYS` topics go out when their value changes (the uptime at
        // every interval, as mosquitto does), the uptime first. The round of
        // the second live uptime counted after the observer subscribed; its
        // total, if it changed, comes before the third. So the last total
        // seen by then (retained, or live) is current; it counts the
        // observer's own session. -W only keeps a failing test from hanging.
        let mut observer = fulmar()
            .args(["sub", "-h", "127.0.0.1", "-p", &port, "-W", "30"])
            .args([
                "-t",
                "$SYS/broker/clients/total",
                "-t",
                "$SYS/broker/uptime",
            ])
            .args(["-F", "%r %t %p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = observer.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut live_uptimes = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut fields = line.splitn(3, ' ');
            let (retained, topic, value) = (fields.next(), fields.next(), fields.next());
            match topic {
                Some("$SYS/broker/clients/total") => seen.push(value.unwrap_or("").to_owned()),
                Some("$SYS/broker/uptime") if retained == Some("0") => live_uptimes += 1,
                _ => {}
            }
            if live_uptimes == 3 {
                break;
            }
        }
        let ended = live_uptimes == 3 && seen.last().map(String::as_str) == Some("1");
        let _ = observer.kill();
        let _ = observer.wait();
        assert!(
            ended,
            "MQTT {mqtt}: the bench left sessions on the broker; sessions seen: {seen:?}"
        );
    }
}

/// Float flags that are no number, or too large or too small to make a
/// duration of, are refused with an error naming the flag, before any
/// connection (--rate 1e-30, -d 1e300 and --drain-timeout inf panicked).
#[test]
fn out_of_range_float_flags_are_refused() {
    // Nothing listens there: a flag that got through fails on connecting.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let cases = [
        ("--rate", "1e-30"),
        ("--rate", "-1"),
        ("--rate", "NaN"),
        ("--rate", "inf"),
        ("--duration", "1e300"),
        ("--duration", "inf"),
        ("--duration", "NaN"),
        ("--duration", "0"),
        ("--drain-timeout", "inf"),
        ("--drain-timeout", "1e300"),
        ("--drain-timeout", "-1"),
        ("--drain-timeout", "NaN"),
    ];
    for (flag, value) in cases {
        let output = fulmar()
            .args(["bench", "-p", &port, &format!("{flag}={value}")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(
            !stderr.contains("connections failed"),
            "{flag} {value}: {stderr}"
        );
    }
}

/// A server that accepts TCP connections and never answers: the TLS
/// handshake (which had no timeout and hung for ever) gives up after
/// --connect-timeout, and the run fails with that error. The wait below
/// is only a guard against a hang.
#[test]
fn a_silent_server_times_connections_out() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let mut child = fulmar()
        .args([
            "bench",
            "--tls",
            "-p",
            &port,
            "-n",
            "1",
            "--connect-timeout",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        let _ = tx.send(text);
    });
    let stderr = rx.recv_timeout(std::time::Duration::from_secs(120));
    let _ = child.kill();
    let status = child.wait().unwrap();
    let stderr = stderr.expect("fulmar bench hung on a silent server");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("connections failed"), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    drop(silent);
}

/// How [`scripted_broker`] answers: MQTT 5 or 3.1.1, the QoS it grants
/// every subscription, and the reason code of its PUBACKs (`None`: it never
/// acknowledges). It never delivers anything.
#[derive(Clone, Copy)]
struct Script {
    v5: bool,
    granted: u8,
    puback: Option<u8>,
}

/// A broker that follows `script` on a free loopback port, in threads that
/// end with their connections (the listener lives as long as the tests).
fn scripted_broker(script: Script) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve_script(stream, script));
        }
    });
    port
}

fn serve_script(mut stream: std::net::TcpStream, script: Script) {
    use std::io::{Read, Write};
    let mut byte = [0u8; 1];
    loop {
        if stream.read_exact(&mut byte).is_err() {
            return;
        }
        let kind = byte[0];
        let (mut len, mut shift) = (0usize, 0);
        loop {
            if stream.read_exact(&mut byte).is_err() {
                return;
            }
            len |= usize::from(byte[0] & 0x7f) << shift;
            shift += 7;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let reply = match kind >> 4 {
            1 if script.v5 => vec![0x20, 3, 0, 0, 0],
            1 => vec![0x20, 2, 0, 0],
            8 if script.v5 => vec![0x90, 4, body[0], body[1], 0, script.granted],
            8 => vec![0x90, 3, body[0], body[1], script.granted],
            3 if (kind >> 1) & 3 == 1 => {
                let topic = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let id = [body[2 + topic], body[3 + topic]];
                match script.puback {
                    None => continue,
                    Some(code) if script.v5 => vec![0x40, 3, id[0], id[1], code],
                    Some(_) => vec![0x40, 2, id[0], id[1]],
                }
            }
            12 => vec![0xd0, 0],
            14 => return,
            _ => continue,
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Runs `fulmar bench --json -p port args`, giving up (and failing) after
/// two minutes, which only guards against a hang: the exit status, the
/// report (Null when stdout is no JSON) and stderr.
fn bench_outcome(port: u16, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut child = fulmar()
        .args(["bench", "--json", "-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        let _ = tx.send(err);
    });
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
    let stderr = rx.recv_timeout(std::time::Duration::from_secs(120));
    let _ = child.kill();
    let status = child.wait().unwrap();
    let stderr = stderr.expect("fulmar bench hung");
    (
        status.code(),
        serde_json::from_str(&out).unwrap_or(Value::Null),
        stderr,
    )
}

/// Acknowledged QoS 1 messages that never arrive: the report is printed,
/// no error, and the exit status is 2 (the run waited the drain timeout
/// for them).
#[test]
fn lost_acknowledged_messages_exit_with_status_2() {
    let port = scripted_broker(Script {
        v5: true,
        granted: 1,
        puback: Some(0),
    });
    let (code, report, stderr) =
        bench_outcome(port, &["-q", "1", "-n", "50", "--drain-timeout", "1"]);
    assert_eq!(code, Some(2), "{stderr}\n{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["qos"][0]["acked"], 50, "{report:#}");
    assert_eq!(report["qos"][0]["lost"], 50, "{report:#}");
    assert!(stderr.contains("50 acknowledged QoS 1/2"), "{stderr}");
}

/// PUBACKs with an error reason code: counted by code, one error, exit
/// status 1; the rejected messages are not expected (nor lost).
#[test]
fn rejected_messages_are_counted_and_fail_the_run() {
    let port = scripted_broker(Script {
        v5: true,
        granted: 1,
        puback: Some(0x87),
    });
    let (code, report, stderr) =
        bench_outcome(port, &["-q", "1", "-n", "20", "--drain-timeout", "1"]);
    assert_eq!(code, Some(1), "{stderr}\n{report:#}");
    assert_eq!(report["rejected"], 20, "{report:#}");
    assert_eq!(
        report["rejected_by_reason"]["NotAuthorized"], 20,
        "{report:#}"
    );
    assert_eq!(report["errors"], 1, "{report:#}");
    let qos = &report["qos"][0];
    assert_eq!(
        (&qos["acked"], &qos["expected"], &qos["lost"]),
        (&0.into(), &0.into(), &0.into()),
        "{report:#}"
    );
}

/// A subscription granted a lower QoS than asked would make the QoS 0
/// drops of the broker look like QoS 1 losses: the run fails instead.
#[test]
fn a_downgraded_subscription_fails_the_run() {
    let port = scripted_broker(Script {
        v5: false,
        granted: 0,
        puback: Some(0),
    });
    let (code, _, stderr) = bench_outcome(port, &["--mqtt", "3.1.1", "-q", "1", "-n", "10"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("granted QoS 0, less than the QoS 1 asked"),
        "{stderr}"
    );
}

/// With --count, a broker that stops acknowledging ends the run after
/// --drain-timeout with an error (it waited for ever).
#[test]
fn a_stalled_count_run_ends_with_an_error() {
    let port = scripted_broker(Script {
        v5: false,
        granted: 1,
        puback: None,
    });
    let (code, report, stderr) = bench_outcome(
        port,
        &[
            "--mqtt",
            "3.1.1",
            "-S",
            "0",
            "-q",
            "1",
            "-n",
            "100",
            "--drain-timeout",
            "1",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}\n{report:#}");
    let samples = report["error_samples"].to_string();
    assert!(samples.contains("stalled"), "{report:#}");
    // One error: what the publisher left undone is part of it, not a
    // drain timeout of its own.
    assert_eq!(report["errors"], 1, "{report:#}");
    assert!(
        samples.contains("left 20 QoS 1/2 messages unacknowledged"),
        "{report:#}"
    );
    assert!(!samples.contains("drain timeout"), "{report:#}");
    assert_eq!(report["qos"][0]["acked"], 0, "{report:#}");
}

/// Coordinated omission at the end of a --rate --duration run: a broker
/// that stops acknowledging holds the publisher up (5 in flight), and the
/// messages due before the end that it could not send are counted in
/// unsent_due, each a latency sample of its wait (here until the publisher
/// gave up, the drain timeout after the end: at least 0.5 s).
#[test]
fn messages_due_but_unsent_at_the_end_are_latency_samples() {
    let port = scripted_broker(Script {
        v5: false,
        granted: 1,
        puback: None,
    });
    let (code, report, stderr) = bench_outcome(
        port,
        &[
            "--mqtt",
            "3.1.1",
            "-S",
            "0",
            "-q",
            "1",
            "--inflight",
            "5",
            "--rate",
            "20",
            "-d",
            "1",
            "--drain-timeout",
            "0.5",
        ],
    );
    // The 5 in flight were never acknowledged: a drain timeout.
    assert_eq!(code, Some(1), "{stderr}\n{report:#}");
    assert_eq!(report["sent"], 5, "{report:#}");
    let unsent = report["unsent_due"].as_u64().unwrap();
    assert!((1..=15).contains(&unsent), "{report:#}");
    assert_eq!(report["latency"]["count"], unsent, "{report:#}");
    assert!(
        report["latency"]["p50_us"].as_u64().unwrap() >= 490_000,
        "{report:#}"
    );
    assert!(stderr.contains("fell behind"), "{stderr}");
}
