//! Writes the hand-made seed corpus of the `client` target: scripts (see
//! `fulmar_fuzz::client_checks`) in which the broker accepts or refuses the connection,
//! acknowledges publishes and subscriptions, delivers messages at each QoS, imposes small
//! limits, disconnects, closes, or sends garbage, in both protocol versions.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example client_seeds
//! ```
//!
//! Files are named `seed-<what>` and written into `fuzz/corpus/client/`; every seed is
//! played through `check_client` before it is written and must reach what it was made for.

use std::fs;
use std::io;
use std::path::Path;

use fulmar_fuzz::client_checks::{ClientStep, check_client};

struct Script(Vec<u8>);

/// Broker packet kinds (see `client_checks::broker_packet`).
const CONNACK: u8 = 0;
const SUBACK: u8 = 1;
const PUBACK: u8 = 3;
const PUBREC: u8 = 4;
const PUBREL: u8 = 5;
const PUBCOMP: u8 = 6;
const PUBLISH: u8 = 7;
const PINGRESP: u8 = 8;
const DISCONNECT: u8 = 9;

impl Script {
    fn new(setup: u8) -> Self {
        Self(vec![setup])
    }

    fn op(mut self, step: ClientStep, args: &[u8]) -> Self {
        self.0.push(step as u8);
        self.0.extend_from_slice(args);
        self
    }

    fn packet(self, kind: u8, arg: u8) -> Self {
        self.op(ClientStep::Packet, &[kind, arg])
    }

    /// Packet identifier `n` (1 to 8) in a packet argument.
    fn id(n: u8) -> u8 {
        n - 1
    }

    fn settle(self) -> Self {
        self.op(ClientStep::Settle, &[])
    }
}

fn seeds() -> Vec<(String, Script, usize)> {
    let mut seeds = Vec::new();
    for (name, v) in [("v3", 0u8), ("v5", 1u8)] {
        let id = Script::id;
        let mut add = |what: &str, script: Script, succeeded: usize| {
            seeds.push((format!("{what}-{name}"), script, succeeded));
        };
        add(
            "flows",
            Script::new(v)
                .packet(CONNACK, 0)
                .settle()
                .op(ClientStep::Publish, &[0])
                .op(ClientStep::Publish, &[1 | 4])
                .op(ClientStep::Publish, &[2 | 4])
                .settle()
                .packet(PUBACK, id(1))
                .packet(PUBREC, id(2))
                .settle()
                .packet(PUBCOMP, id(2))
                .op(ClientStep::Subscribe, &[1 | 4])
                .settle()
                .packet(SUBACK, id(3))
                .settle()
                .packet(PUBLISH, 0x20)
                .packet(PUBLISH, 0x20 | (1 << 3) | id(1))
                .packet(PUBLISH, 0x20 | (2 << 3) | id(2))
                .packet(PUBREL, id(2))
                .packet(PINGRESP, 0)
                .settle()
                .op(ClientStep::Read, &[])
                .op(ClientStep::Disconnect, &[])
                .settle(),
            5,
        );
        add(
            "refused",
            Script::new(v)
                .packet(CONNACK, 2)
                .settle()
                .op(ClientStep::Publish, &[1]),
            0,
        );
        add(
            "garbage",
            Script::new(v)
                .op(ClientStep::Raw, &[5, 0x20, 0x02, 0x00, 0x00, 0xFF])
                .settle()
                .op(ClientStep::Raw, &[3, 0x40, 0x02, 0x00]),
            0,
        );
        add(
            "closed-in-flight",
            Script::new(v)
                .packet(CONNACK, 0)
                .settle()
                .op(ClientStep::Publish, &[1])
                .op(ClientStep::Publish, &[2])
                .op(ClientStep::Subscribe, &[1])
                .settle()
                .op(ClientStep::Close, &[])
                .settle(),
            0,
        );
        add(
            "manual-acks",
            Script::new(v | 2)
                .packet(CONNACK, 0)
                .settle()
                .op(ClientStep::Subscribe, &[2 | 4])
                .settle()
                .packet(SUBACK, id(1))
                .settle()
                .packet(PUBLISH, 0x20 | (1 << 3) | id(1))
                .packet(PUBLISH, 0x20 | (2 << 3) | id(2))
                .settle()
                .op(ClientStep::Read, &[])
                .packet(PUBREL, id(2))
                .settle(),
            1,
        );
        add(
            "small-limits",
            Script::new(v | 4 | 8)
                .packet(CONNACK, if v == 1 { 8 } else { 0 })
                .settle()
                .op(ClientStep::Publish, &[1])
                .op(ClientStep::Publish, &[1])
                .op(ClientStep::Publish, &[2])
                .settle()
                .packet(PUBACK, id(1))
                .settle()
                .packet(PUBACK, id(2))
                .settle()
                .packet(PUBACK, id(1))
                .packet(PUBACK, id(3))
                .settle(),
            2,
        );
        add(
            "server-disconnect",
            Script::new(v)
                .packet(CONNACK, 0)
                .settle()
                .op(ClientStep::Publish, &[1])
                .settle()
                .packet(DISCONNECT, 0)
                .settle(),
            0,
        );
    }
    seeds
}

fn main() -> io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/client");
    fs::create_dir_all(&dir)?;
    let seeds = seeds();
    for (name, script, succeeded) in &seeds {
        let outcome = check_client(&script.0);
        println!("seed-{name}: {outcome:?}");
        assert!(
            outcome.succeeded >= *succeeded,
            "seed-{name} reached less than it was made for"
        );
        fs::write(dir.join(format!("seed-{name}")), &script.0)?;
    }
    println!("{} seeds written to {}", seeds.len(), dir.display());
    Ok(())
}
