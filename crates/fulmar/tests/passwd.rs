//! `fulmar passwd`: password files in mosquitto_passwd's format, made with
//! mosquitto_passwd's flags, read by `fulmar broker` and by mosquitto 2.0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{FulmarBroker, Mosquitto, free_port, fulmar, publish, publish_ok, temp_dir};

fn passwd(args: &[&str]) -> Output {
    fulmar().arg("passwd").args(args).output().unwrap()
}

/// `fulmar passwd ARGS` with `input` on its standard input.
fn passwd_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = fulmar()
        .arg("passwd")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn passwd_ok(args: &[&str]) {
    let out = passwd(args);
    assert!(
        out.status.success(),
        "fulmar passwd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `user` / `password` may publish through the broker on `port`.
fn logs_in(port: u16, user: &str, password: &str) -> bool {
    publish(port, &["-u", user, "-P", password, "-t", "t", "-m", "x"])
        .status
        .success()
}

// A file made and edited by `fulmar passwd` (add, change, delete, hash a
// plain-text file) serves mosquitto 2.0 and `fulmar broker` alike: the
// same users log in with the same passwords on both.
// (tools, no spec statement; v5:MQTT-3.1.4-2 the server authenticates)
#[test]
fn a_file_from_fulmar_passwd_serves_fulmar_and_mosquitto() {
    let dir = temp_dir();
    let file = dir.join("passwd");
    let f = file.to_str().unwrap();
    passwd_ok(&["-c", "-b", f, "alice", "secret"]);
    // The password on standard input, twice, as mosquitto_passwd reads it.
    let out = passwd_with_stdin(&[f, "bob"], "builder\nbuilder\n");
    assert!(out.status.success(), "{out:?}");
    passwd_ok(&["-b", f, "carol", "first"]);
    // A new password for carol: her line is replaced, not added.
    passwd_ok(&["-b", f, "carol", "second"]);
    // The old 1.x hash, as mosquitto_passwd -H sha512 writes it.
    passwd_ok(&["-b", "-H", "sha512", f, "dave", "old"]);
    passwd_ok(&["-D", f, "bob"]);
    let text = std::fs::read_to_string(&file).unwrap();
    let users: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(users, ["alice", "carol", "dave"], "{text}");
    assert!(text.contains("alice:$7$101$"), "{text}");
    assert!(text.contains("dave:$6$"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "a new password file is its owner's only"
        );
    }
    // A plain-text file hashed in place; the hashed line stays.
    let plain = dir.join("plain");
    std::fs::write(
        &plain,
        format!("# team\neve:evening\n{}", text.lines().next().unwrap()),
    )
    .unwrap();
    passwd_ok(&["-U", plain.to_str().unwrap()]);
    let hashed = std::fs::read_to_string(&plain).unwrap();
    assert!(hashed.starts_with("# team\neve:$7$101$"), "{hashed}");
    assert!(hashed.ends_with(&format!("{}\n", text.lines().next().unwrap())));

    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {f}\n\
             persistence false\n"
        ),
    )
    .unwrap();
    let mosquitto = Mosquitto::with_config(Path::new(&conf), port);
    let fulmar_broker = FulmarBroker::start(&["-c", conf.to_str().unwrap()]);
    for (broker, port) in [
        ("mosquitto", mosquitto.port),
        ("fulmar", fulmar_broker.port),
    ] {
        for (user, password, ok) in [
            ("alice", "secret", true),
            ("carol", "second", true),
            ("carol", "first", false),
            ("dave", "old", true),
            ("bob", "builder", false),
            ("alice", "Secret", false),
        ] {
            assert_eq!(
                logs_in(port, user, password),
                ok,
                "{broker}: {user} / {password}"
            );
        }
    }
    // And the hashed plain-text file: eve logs in.
    let fulmar_plain =
        FulmarBroker::start(&["-c", write_toml(&dir, "plain.toml", "plain").as_str()]);
    assert!(logs_in(fulmar_plain.port, "eve", "evening"));
    publish_ok(
        fulmar_plain.port,
        &["-u", "alice", "-P", "secret", "-t", "t", "-m", "x"],
    );
}

fn write_toml(dir: &Path, name: &str, password_file: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("[auth]\npassword_file = \"{password_file}\"\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

// Mistakes are refused with a message and status 1, the file untouched.
// (tools, no spec statement)
#[test]
fn mistakes_are_refused_and_leave_the_file_as_it_was() {
    let dir = temp_dir();
    let file = dir.join("passwd");
    let f = file.to_str().unwrap();
    passwd_ok(&["-c", "-b", f, "alice", "secret"]);
    let before = std::fs::read_to_string(&file).unwrap();
    for (args, says) in [
        (vec!["-b", f, "a:b", "pw"], "cannot hold ':'"),
        (vec!["-b", f, "#a", "pw"], "start with '#'"),
        (vec!["-b", f, "bob", ""], "password is empty"),
        (vec!["-b", f, "bob"], "-b needs the password"),
        (vec![f, "bob", "pw"], "needs -b"),
        (vec!["-D", f, "nobody"], "no user \"nobody\""),
        (vec!["-b", "-H", "md5", f, "bob", "pw"], "-H md5"),
        (vec!["-U", f, "bob"], "-U takes the file only"),
    ] {
        let out = passwd(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let missing = dir.join("missing");
    let out = passwd(&["-b", missing.to_str().unwrap(), "bob", "pw"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("-c creates it"));
    assert!(!missing.exists());
    // Without -b, standard input (not a terminal) gives the password twice,
    // as to mosquitto_passwd: nothing there, or two that differ, is refused.
    for (input, says) in [
        ("", "no password on standard input"),
        ("one\n", "no password on standard input"),
        ("one\ntwo\n", "do not match"),
    ] {
        let out = passwd_with_stdin(&[f, "bob"], input);
        assert_eq!(out.status.code(), Some(1), "{input:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{input:?}: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    // No temporary file left behind.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}
