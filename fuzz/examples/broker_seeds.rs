//! Writes the hand-made seed corpus of the `broker` target: scripts (see
//! `fulmar_fuzz::broker_checks`) of connections, subscriptions, QoS 0/1/2 flows, retained
//! messages, wills, persistent sessions, take-overs, shared subscriptions, topic aliases,
//! limits and malformed input, in both protocol versions.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example broker_seeds
//! ```
//!
//! Files are named `seed-<what>` and written into `fuzz/corpus/broker/`; existing files with
//! the same name are overwritten, other files are left alone. Every seed is played through
//! `check_broker` before it is written, and must reach what it was made for.

use std::fs;
use std::io;
use std::path::Path;

use fulmar_fuzz::broker_checks::{Step, check_broker};

/// A script under construction.
struct Script(Vec<u8>);

/// Ready-made packet kinds (see `broker_checks::packet`).
const CONNECT: u8 = 0;
const SUBSCRIBE: u8 = 1;
const UNSUBSCRIBE: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const PINGREQ: u8 = 8;
const DISCONNECT: u8 = 9;
const AUTH: u8 = 10;

/// CONNECT flags.
const V5: u8 = 0x01;
const ID_B: u8 = 0x02;
const ID_EMPTY: u8 = 0x04;
const CLEAN: u8 = 0x08;
const WILL: u8 = 0x10;
const EXPIRY: u8 = 0x20;
const SMALL: u8 = 0x40;

/// PUBLISH flags: topic in bits 0-1, QoS in bits 2-3.
fn publish(topic: u8, qos: u8) -> u8 {
    topic | (qos << 2)
}
const RETAIN: u8 = 0x10;
const EMPTY: u8 = 0x40;
const ALIAS: u8 = 0x80;
const ALIAS_ONLY: u8 = 0x0C;

/// SUBSCRIBE flags: filter in bits 0-2, QoS in bits 3-4.
fn subscribe(filter: u8, qos: u8) -> u8 {
    filter | (qos << 3)
}

impl Script {
    fn new(setup: u8) -> Self {
        Self(vec![setup])
    }

    fn op(mut self, slot: u8, step: Step, args: &[u8]) -> Self {
        self.0.push(slot | ((step as u8) << 2));
        self.0.extend_from_slice(args);
        self
    }

    fn raw(mut self, slot: u8, bytes: &[u8]) -> Self {
        for chunk in bytes.chunks(255) {
            let len = u8::try_from(chunk.len()).unwrap_or(255);
            self = self.op(slot, Step::Raw, &[len]);
            self.0.extend_from_slice(chunk);
        }
        self
    }

    fn packet(self, slot: u8, kind: u8, arg: u8) -> Self {
        self.op(slot, Step::Packet, &[kind, arg])
    }

    fn close(self, slot: u8) -> Self {
        self.op(slot, Step::Close, &[])
    }

    fn settle(self) -> Self {
        self.op(0, Step::Settle, &[])
    }

    fn local(self, b: u8) -> Self {
        self.op(0, Step::Local, &[b])
    }

    fn session(self, b: u8) -> Self {
        self.op(0, Step::Session, &[b])
    }
}

/// Two clients of `version` (`V5` or 0): slot 0 "a" subscribed to `#` at QoS 2, slot 1 "b".
fn two_clients(setup: u8, v: u8) -> Script {
    Script::new(setup)
        .packet(0, CONNECT, v | CLEAN)
        .packet(0, SUBSCRIBE, subscribe(0, 2))
        .packet(1, CONNECT, v | ID_B | CLEAN)
        .settle()
}

fn seeds() -> Vec<(String, Script, Expect)> {
    let mut seeds = Vec::new();
    for (name, v) in [("v3", 0u8), ("v5", V5)] {
        let mut add = |what: &str, script: Script, expect: Expect| {
            seeds.push((format!("{what}-{name}"), script, expect));
        };
        add(
            "connect",
            Script::new(0)
                .packet(0, CONNECT, v | CLEAN)
                .packet(0, PINGREQ, 0)
                .packet(0, DISCONNECT, 0),
            Expect::accepted(1),
        );
        add(
            "qos012",
            two_clients(0, v)
                .packet(1, PUBLISH, publish(0, 0))
                .packet(1, PUBLISH, publish(0, 1))
                .packet(1, PUBLISH, publish(1, 2) | (1 << 5))
                .settle()
                .packet(1, PUBREL, 1)
                .settle()
                .packet(0, PUBACK, 0)
                .packet(0, PUBREC, 1)
                .settle()
                .packet(0, PUBCOMP, 1)
                .packet(0, UNSUBSCRIBE, 0)
                .packet(1, PUBLISH, publish(0, 1))
                .settle(),
            Expect::publishes(2, 3),
        );
        add(
            "retained",
            Script::new(0)
                .packet(1, CONNECT, v | ID_B | CLEAN)
                .packet(1, PUBLISH, publish(0, 1) | RETAIN)
                .packet(1, PUBLISH, publish(3, 0) | RETAIN)
                .settle()
                .packet(0, CONNECT, v | CLEAN)
                .packet(0, SUBSCRIBE, subscribe(0, 1))
                .settle()
                .packet(1, PUBLISH, publish(0, 0) | RETAIN | EMPTY)
                .settle()
                .packet(0, SUBSCRIBE, subscribe(2, 0))
                .settle(),
            Expect::publishes(2, 2),
        );
        add(
            "will",
            Script::new(0)
                .packet(1, CONNECT, v | ID_B | CLEAN)
                .packet(1, SUBSCRIBE, subscribe(4, 1))
                .packet(0, CONNECT, v | CLEAN | WILL)
                .settle()
                .close(0)
                .settle()
                .packet(2, CONNECT, v | ID_EMPTY | CLEAN)
                .packet(2, SUBSCRIBE, subscribe(4, 0))
                .settle(),
            Expect::publishes(3, 2),
        );
        add(
            "resume",
            Script::new(0)
                .packet(0, CONNECT, v | EXPIRY)
                .packet(0, SUBSCRIBE, subscribe(2, 1))
                .settle()
                .close(0)
                .settle()
                .local(publish(0, 1) << 2)
                .local(publish(0, 2) << 2)
                .packet(1, CONNECT, v | ID_B | CLEAN)
                .packet(1, PUBLISH, publish(0, 2))
                .packet(1, PUBREL, 0)
                .settle()
                .packet(0, CONNECT, v | EXPIRY)
                .settle()
                .packet(0, PUBACK, 0),
            Expect::publishes(2, 2),
        );
        add(
            "takeover",
            Script::new(0)
                .packet(0, CONNECT, v | EXPIRY)
                .packet(0, SUBSCRIBE, subscribe(0, 1))
                .settle()
                .packet(1, CONNECT, v | EXPIRY)
                .settle()
                .packet(2, CONNECT, v | ID_B | CLEAN)
                .packet(2, PUBLISH, publish(0, 1))
                .settle(),
            Expect::publishes(3, 1),
        );
        add(
            "shared",
            Script::new(0)
                .packet(0, CONNECT, v | CLEAN)
                .packet(0, SUBSCRIBE, subscribe(3, 1))
                .packet(1, CONNECT, v | ID_B | CLEAN)
                .packet(1, SUBSCRIBE, subscribe(3, 2))
                .packet(2, CONNECT, v | ID_EMPTY | CLEAN)
                .packet(2, PUBLISH, publish(0, 1))
                .packet(2, PUBLISH, publish(1, 0))
                .packet(2, PUBLISH, publish(0, 2))
                .settle(),
            // Shared in both versions (3.1.1 leaves `$` topics to the server).
            Expect::publishes(3, 3),
        );
        add(
            "limits",
            two_clients(0xFF, v)
                .packet(0, SUBSCRIBE, subscribe(1, 1))
                .packet(0, SUBSCRIBE, subscribe(2, 1))
                .packet(1, PUBLISH, publish(0, 1) | RETAIN)
                .packet(1, PUBLISH, publish(1, 1) | RETAIN)
                .packet(1, PUBLISH, publish(3, 2) | RETAIN)
                .packet(2, CONNECT, v | ID_EMPTY | CLEAN)
                .settle(),
            Expect::accepted(2),
        );
        add(
            "garbage",
            Script::new(0)
                .raw(0, &[0x10, 0x03, 0x00, 0x04, 0xFF])
                .raw(1, &[0x30, 0x02, 0x00, 0x00])
                .packet(2, CONNECT, v | CLEAN)
                .packet(2, CONNECT, v | CLEAN)
                .raw(
                    3,
                    &[
                        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00,
                    ],
                )
                .settle(),
            Expect::accepted(1),
        );
        add(
            "local",
            Script::new(0)
                .local(1 | (1 << 2))
                .local(1 | (4 << 2))
                .packet(0, CONNECT, v | CLEAN | WILL)
                .packet(0, PUBLISH, publish(0, 1))
                .local(publish(0, 1) << 2)
                .packet(0, SUBSCRIBE, subscribe(1, 2))
                .local(publish(0, 2) << 2 | 0x40)
                .settle()
                .local(2)
                .local(3)
                .packet(0, DISCONNECT, 1)
                .settle()
                .local(2),
            Expect::publishes(1, 1),
        );
        add(
            "take-session",
            Script::new(0)
                .packet(0, CONNECT, v | EXPIRY)
                .packet(0, SUBSCRIBE, subscribe(0, 1))
                .settle()
                .session(1)
                .session(0)
                .settle()
                .packet(1, CONNECT, v | ID_B | EXPIRY)
                .close(1)
                .settle()
                .session(2)
                .session(3),
            Expect::accepted(2),
        );
        add(
            // The rule turns on: "a/+" is withdrawn from the connected client, which
            // gets only the message for "will/#".
            "reauthorize",
            Script::new(0)
                .packet(0, CONNECT, v | EXPIRY)
                .packet(0, SUBSCRIBE, subscribe(1, 1))
                .packet(0, SUBSCRIBE, subscribe(4, 1))
                .settle()
                .session(0x18)
                .local(publish(0, 1) << 2)
                .local(publish(2, 1) << 2)
                .settle()
                .packet(0, PUBACK, 0)
                .session(0x08)
                .settle(),
            Expect::publishes(1, 1),
        );
        add(
            // The rule turns on while the session is away: resumed, it loses "a/+" and
            // the message queued for it.
            "resume-withdrawn",
            Script::new(0)
                .packet(0, CONNECT, v | EXPIRY)
                .packet(0, SUBSCRIBE, subscribe(1, 1))
                .packet(0, SUBSCRIBE, subscribe(4, 1))
                .settle()
                .close(0)
                .settle()
                .local(publish(0, 1) << 2)
                .local(publish(2, 1) << 2)
                .session(0x18)
                .packet(0, CONNECT, v | EXPIRY)
                .settle(),
            Expect::publishes(1, 1),
        );
        add(
            "backpressure",
            Script::new(0x08)
                .local(1)
                .packet(0, CONNECT, v | CLEAN)
                .packet(0, PUBLISH, publish(0, 1))
                .packet(0, PUBLISH, publish(1, 1) | (1 << 5))
                .packet(0, PUBLISH, publish(0, 2) | (2 << 5))
                .packet(0, PUBLISH, publish(1, 2) | (3 << 5))
                .settle()
                .local(2)
                .settle(),
            Expect::accepted(1),
        );
        add(
            "too-large",
            Script::new(0x04)
                .packet(0, CONNECT, v | CLEAN)
                .raw(
                    0,
                    &[&[0x30, 0x90, 0x01, 0x00, 0x01, b'a'][..], &[7u8; 141]].concat(),
                )
                .settle(),
            Expect::accepted(1),
        );
        add(
            "max-connections",
            Script::new(0x80)
                .packet(0, CONNECT, v | CLEAN)
                .packet(1, CONNECT, v | ID_B | CLEAN)
                .packet(2, CONNECT, v | ID_EMPTY | CLEAN)
                .settle(),
            Expect::accepted(2),
        );
    }
    // MQTT 5.0 only: small client limits, topic aliases, AUTH, DISCONNECT properties.
    seeds.push((
        "receive-maximum-v5".into(),
        Script::new(0)
            .packet(0, CONNECT, V5 | CLEAN | SMALL)
            .packet(0, SUBSCRIBE, subscribe(0, 1))
            .packet(1, CONNECT, V5 | ID_B | CLEAN)
            .packet(1, PUBLISH, publish(0, 1))
            .packet(1, PUBLISH, publish(1, 1) | (1 << 5))
            .packet(1, PUBLISH, publish(3, 2) | (2 << 5))
            .settle()
            .packet(0, PUBACK, 0)
            .settle()
            .packet(1, PUBLISH, publish(2, 0))
            .settle(),
        Expect::publishes(2, 1),
    ));
    seeds.push((
        "resume-smaller-receive-maximum-v5".into(),
        // Three QoS 1 messages in flight, then the session resumes with Receive Maximum 1:
        // one is sent again, the others wait.
        Script::new(0)
            .packet(0, CONNECT, V5 | EXPIRY)
            .packet(0, SUBSCRIBE, subscribe(0, 1))
            .settle()
            .local(publish(0, 1) << 2)
            .local(publish(1, 1) << 2)
            .local(publish(3, 1) << 2)
            .settle()
            .close(0)
            .settle()
            .packet(1, CONNECT, V5 | EXPIRY | SMALL)
            .settle(),
        Expect::publishes(2, 4),
    ));
    seeds.push((
        "topic-alias-v5".into(),
        two_clients(0x10, V5)
            .packet(1, PUBLISH, publish(0, 0) | ALIAS)
            .packet(1, PUBLISH, ALIAS_ONLY)
            .packet(1, PUBLISH, publish(1, 1) | ALIAS)
            .settle(),
        Expect::publishes(2, 3),
    ));
    seeds.push((
        "auth-v5".into(),
        Script::new(0)
            .packet(0, CONNECT, V5 | CLEAN)
            .packet(0, AUTH, 0)
            .packet(1, CONNECT, V5 | ID_B | EXPIRY)
            .packet(1, DISCONNECT, 2)
            .settle(),
        Expect::accepted(2),
    ));
    seeds
}

/// What a seed must reach, so that it exercises what it is named for.
struct Expect {
    accepted: usize,
    publishes: usize,
}

impl Expect {
    fn accepted(n: usize) -> Self {
        Self {
            accepted: n,
            publishes: 0,
        }
    }

    fn publishes(accepted: usize, publishes: usize) -> Self {
        Self {
            accepted,
            publishes,
        }
    }
}

fn main() -> io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/broker");
    fs::create_dir_all(&dir)?;
    let seeds = seeds();
    for (name, script, expect) in &seeds {
        let outcome = check_broker(&script.0);
        println!("seed-{name}: {outcome:?}");
        assert!(
            outcome.accepted >= expect.accepted && outcome.publishes_out >= expect.publishes,
            "seed-{name} reached less than it was made for"
        );
        fs::write(dir.join(format!("seed-{name}")), &script.0)?;
    }
    println!("{} seeds written to {}", seeds.len(), dir.display());
    Ok(())
}
