//! Deterministic simulation: a client session and a server session on an
//! in-memory link driven by a seeded RNG. Packets are delayed (order within
//! one connection is kept, as TCP keeps it), the connection breaks at random
//! steps and the session resumes; keep-alive timeouts happen when the clock
//! runs ahead of a stalled link; now and then the client starts clean; each
//! side acknowledges automatically or by hand (in random order). Protocol
//! version, Receive Maximum and queue limits are drawn per seed. Checked for
//! every seed:
//!
//! - QoS 0 at most once, QoS 1 at least once, QoS 2 exactly once, both ways
//!   (a message discarded by a clean start only has to arrive at most once);
//! - per-topic order of the first delivery of QoS 1/2 messages;
//! - no packet identifier reused while its message is in flight;
//! - no side ever sees a protocol error, in particular never more QoS 1/2
//!   messages than its Receive Maximum;
//! - every queue stays within its limit.
//!
//! `SIM_SEEDS=n` sets the number of seeds (default 2000); `SIM_SEED=s` replays one.
//! A failing seed is printed.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{connect_packet, t0, wire};
use fulmar_codec::{
    ConnAckProperties, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS,
};
use fulmar_session::{Config, DropReason, Error, Event, Session, SessionState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOPICS: [&str; 3] = ["a", "b/c", "d/e/f"];

/// One direction's bookkeeping: what was published, delivered, completed.
#[derive(Default)]
struct Flow {
    sent: Vec<(QoS, &'static str)>,
    delivered: HashMap<u32, usize>,
    first_order: HashMap<&'static str, Vec<u32>>,
    completed: HashMap<u32, usize>,
    ids: HashMap<PacketId, u32>,
    /// Packet identifiers in flight at the sender (first sent, not completed).
    outstanding: HashSet<PacketId>,
    /// Delivered to the application, not acknowledged yet (manual acks).
    to_ack: Vec<PacketId>,
    /// Messages whose session was discarded by a Clean Start: they may be
    /// lost (but still not duplicated, for QoS 2).
    discarded: HashSet<u32>,
}

struct Sim {
    rng: StdRng,
    now: Instant,
    version: ProtocolVersion,
    client: Session,
    server: Session,
    server_config: Config,
    receive_max: [u16; 2],
    max_pending: usize,
    c2s: VecDeque<Packet>,
    s2c: VecDeque<Packet>,
    up: Flow,
    down: Flow,
    connected: bool,
    breaks: usize,
    clean_starts: usize,
    clean_pending: bool,
    timeouts: usize,
    pending_state: Option<SessionState>,
    /// What happens to both sessions before and after every step.
    spare: Spare,
    /// Round trips through `DormantSession` made (with [`Spare::Dormant`]).
    naps: usize,
    /// Everything observable, when recorded: packets sent, events, and the
    /// sessions' queries after every step.
    log: Option<Vec<String>>,
    /// The clock at the start, which logged instants are relative to.
    start: Instant,
}

/// What the simulation does to both sessions before and after every step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spare {
    /// Nothing.
    Keep,
    /// `release_spare_capacity`.
    Release,
    /// `into_dormant` and `wake` when the session allows it (else, as
    /// `into_dormant` does, its spare capacity is released).
    Dormant,
}

/// Puts `session` to sleep and wakes it again, if it has nothing to do;
/// true if it did.
fn nap(session: &mut Session) -> bool {
    let taken = std::mem::replace(session, Session::client(Config::default()));
    let (back, slept) = match taken.into_dormant() {
        Ok(dormant) => (dormant.wake(), true),
        Err(awake) => (awake, false),
    };
    *session = back;
    slept
}

fn message(n: u32, topic: &'static str, qos: QoS) -> Publish {
    let mut p = Publish::new(
        MqttString::from(topic),
        Bytes::copy_from_slice(&n.to_be_bytes()),
    );
    p.qos = qos;
    p
}

fn number(p: &Publish) -> Result<u32, String> {
    let bytes: [u8; 4] = p
        .payload
        .as_ref()
        .try_into()
        .map_err(|_| format!("bad payload {p:?}"))?;
    Ok(u32::from_be_bytes(bytes))
}

impl Sim {
    fn new(seed: u64) -> Self {
        Self::with(seed, Spare::Keep, false)
    }

    fn with(seed: u64, spare: Spare, record: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let version = if rng.random_bool(0.5) {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let receive_max = [rng.random_range(1..=4u16), rng.random_range(1..=4u16)];
        let max_pending = rng.random_range(4..=16usize);
        let config = |rm: u16| Config {
            receive_maximum: NonZeroU16::new(rm).unwrap_or(NonZeroU16::MIN),
            // Under 3.1.1 there is no Receive Maximum on the wire: both sides
            // cap their own in-flight window to the peer's value.
            max_inflight: NonZeroU16::new(rm).unwrap_or(NonZeroU16::MIN),
            max_pending,
            topic_alias_maximum: 2,
            connect_timeout: Some(Duration::from_secs(5)),
            ping_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let mut client_config = config(receive_max[0]);
        let mut server_config = config(receive_max[1]);
        client_config.manual_acks = rng.random_bool(0.5);
        server_config.manual_acks = rng.random_bool(0.5);
        // A Maximum Packet Size every message of the simulation fits in, so
        // the size checks run on every PUBLISH without dropping any.
        if rng.random_bool(0.5) {
            client_config.maximum_packet_size =
                std::num::NonZeroU32::new(rng.random_range(48..200));
            server_config.maximum_packet_size =
                std::num::NonZeroU32::new(rng.random_range(48..200));
        }
        if version == ProtocolVersion::V311 {
            client_config.max_inflight = server_config.receive_maximum;
        }
        if version == ProtocolVersion::V311 {
            server_config.max_inflight = client_config.receive_maximum;
        }
        let now = t0();
        Self {
            rng,
            now,
            version,
            client: Session::client(client_config),
            server: Session::server(server_config.clone(), now),
            server_config,
            receive_max,
            max_pending,
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            up: Flow::default(),
            down: Flow::default(),
            connected: false,
            breaks: 0,
            clean_starts: 0,
            clean_pending: false,
            timeouts: 0,
            pending_state: None,
            spare,
            naps: 0,
            log: record.then(Vec::new),
            start: now,
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        // The broker keeps the old session's state and hands it to the new one.
        self.server.connection_lost(self.now);
        self.client.connection_lost(self.now);
        self.collect()?;
        // The broker's store: the state of the last accepted server session.
        // A server session that never got its CONNECT holds nothing.
        if self.pending_state.is_none() {
            self.pending_state = Some(self.server.session_state(self.now));
        }
        self.server = Session::server(self.server_config.clone(), self.now);
        // Now and then the client starts clean: both sides discard the
        // session. Until a CONNACK confirms it, the client keeps asking for a
        // clean start (it cannot know whether the server saw the CONNECT).
        let clean_start = self.clean_pending || self.rng.random_bool(0.02);
        if clean_start {
            trace(|| "-- clean start".to_string());
            self.clean_starts += 1;
            self.clean_pending = true;
        }
        let mut connect = connect_packet(self.version, "sim", clean_start);
        connect.keep_alive = 5;
        self.c2s.clear();
        self.s2c.clear();
        self.client
            .connect(connect, self.now)
            .map_err(|e| format!("connect: {e}"))?;
        self.connected = true;
        Ok(())
    }

    fn break_link(&mut self) -> Result<(), String> {
        trace(|| "-- link broken".to_string());
        self.breaks += 1;
        self.c2s.clear();
        self.s2c.clear();
        self.client.connection_lost(self.now);
        self.server.connection_lost(self.now);
        self.connected = false;
        self.collect()
    }

    fn publish_up(&mut self) -> Result<(), String> {
        let n = u32::try_from(self.up.sent.len()).map_err(|e| e.to_string())?;
        let (qos, topic) = self.pick();
        match self.client.publish(message(n, topic, qos), self.now) {
            Ok(id) => {
                self.up.sent.push((qos, topic));
                if let Some(id) = id {
                    self.up.ids.insert(id, n);
                }
                Ok(())
            }
            Err(Error::Limit(_)) => Ok(()),
            Err(e) => Err(format!("client publish: {e}")),
        }
    }

    fn publish_down(&mut self) -> Result<(), String> {
        if self.pending_state.is_some() {
            // The broker routes to the stored session, not to a connection
            // that has not been accepted yet; this simulation just waits.
            return Ok(());
        }
        let n = u32::try_from(self.down.sent.len()).map_err(|e| e.to_string())?;
        let (qos, topic) = self.pick();
        match self.server.publish(message(n, topic, qos), self.now) {
            Ok(id) => {
                self.down.sent.push((qos, topic));
                if let Some(id) = id {
                    self.down.ids.insert(id, n);
                }
                Ok(())
            }
            Err(Error::Limit(_)) => Ok(()),
            Err(e) => Err(format!("server publish: {e}")),
        }
    }

    fn pick(&mut self) -> (QoS, &'static str) {
        let qos = match self.rng.random_range(0..3) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        (qos, TOPICS[self.rng.random_range(0..TOPICS.len())])
    }

    /// Moves what each session wants to send onto the link.
    fn transmit(&mut self) -> Result<(), String> {
        while let Some(p) = self.client.poll_transmit() {
            if let Some(log) = &mut self.log {
                log.push(format!("client sends {p:?}"));
            }
            check_first_send(&mut self.up, &p)?;
            if self.connected {
                self.c2s.push_back(wire(p, self.version));
            }
        }
        while let Some(p) = self.server.poll_transmit() {
            if let Some(log) = &mut self.log {
                log.push(format!("server sends {p:?}"));
            }
            check_first_send(&mut self.down, &p)?;
            if self.connected {
                self.s2c.push_back(wire(p, self.version));
            }
        }
        Ok(())
    }

    fn deliver_c2s(&mut self) -> Result<(), String> {
        if let Some(p) = self.c2s.pop_front() {
            trace(|| format!("c->s {}", brief(&p)));
            self.server
                .handle_packet(p, self.now)
                .map_err(|e| format!("server: {e}"))?;
        }
        Ok(())
    }

    fn deliver_s2c(&mut self) -> Result<(), String> {
        if let Some(p) = self.s2c.pop_front() {
            trace(|| format!("s->c {}", brief(&p)));
            self.client
                .handle_packet(p, self.now)
                .map_err(|e| format!("client: {e}"))?;
        }
        Ok(())
    }

    fn collect(&mut self) -> Result<(), String> {
        while let Some(event) = self.server.poll_event() {
            if let Some(log) = &mut self.log {
                log.push(format!("server event {event:?}"));
            }
            match event {
                Event::Connect(connect) => {
                    if connect.clean_start {
                        // The server drops its in-flight and queued messages silently.
                        let down = &mut self.down;
                        down.discarded.extend(down.ids.drain().map(|(_, n)| n));
                        down.outstanding.clear();
                    }
                    let stored = self.pending_state.take();
                    self.server
                        .accept(ConnAckProperties::default(), stored, self.now)
                        .map_err(|e| format!("accept: {e}"))?;
                }
                other => record(&mut self.up, &mut self.down, other)?,
            }
        }
        while let Some(event) = self.client.poll_event() {
            if let Some(log) = &mut self.log {
                log.push(format!("client event {event:?}"));
            }
            if matches!(event, Event::Connected(_)) {
                self.clean_pending = false;
            }
            record(&mut self.down, &mut self.up, event)?;
        }
        Ok(())
    }

    /// The application acknowledges one delivered message, in random order.
    fn ack(&mut self, server_side: bool) -> Result<(), String> {
        let (flow, session) = if server_side {
            (&mut self.up, &mut self.server)
        } else {
            (&mut self.down, &mut self.client)
        };
        if flow.to_ack.is_empty() {
            return Ok(());
        }
        let id = flow
            .to_ack
            .swap_remove(self.rng.random_range(0..flow.to_ack.len()));
        let result = session.ack(id);
        trace(|| {
            format!(
                "{} acks {id}: {result:?}",
                if server_side { "server" } else { "client" }
            )
        });
        match result {
            // Unknown after a reconnection, or acks are automatic.
            Ok(()) | Err(Error::Api(_)) => Ok(()),
            Err(e) => Err(format!("ack: {e}")),
        }
    }

    fn tick(&mut self) -> Result<(), String> {
        let dt = Duration::from_millis(self.rng.random_range(0..3000));
        self.now += dt;
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
        Ok(())
    }

    /// After any step: closed connections are re-established, and the
    /// invariants that hold at every instant are checked.
    fn after_step(&mut self) -> Result<(), String> {
        self.release();
        self.transmit()?;
        self.collect()?;
        self.release();
        if let Some(log) = &mut self.log {
            for (session, name) in [(&self.client, "client"), (&self.server, "server")] {
                log.push(format!(
                    "{name}: connected {} closed {} error {:?} in flight {} pending {} \
                     window {}/{} qos2 {} timeout {:?} keep alive {} subscriptions {:?} state {:?}",
                    session.is_connected(),
                    session.is_closed(),
                    session.error(),
                    session.inflight_len(),
                    session.pending_len(),
                    session.send_window_used(),
                    session.send_window(),
                    session.incoming_qos2_len(),
                    session.poll_timeout().map(|t| t - self.start),
                    session.keep_alive(),
                    session.subscriptions(),
                    session.session_state(self.now),
                ));
            }
        }
        for (session, name) in [(&self.client, "client"), (&self.server, "server")] {
            if let Some(error) = session.error()
                && !matches!(error, Error::KeepAliveTimeout | Error::ConnectTimeout)
            {
                return Err(format!("{name} closed with {error}"));
            }
            if session.pending_len() > self.max_pending {
                return Err(format!(
                    "{name} queue {} above {}",
                    session.pending_len(),
                    self.max_pending
                ));
            }
            // Every payload here is 4 bytes and every topic 1 to 5: the
            // queue's byte count (what a broker bounds) follows every way in
            // and out of the queue (exactly: outbound.rs's unit test).
            let (len, bytes) = (session.pending_len(), session.pending_bytes());
            if bytes < 5 * len || bytes > 9 * len {
                return Err(format!(
                    "{name} queue of {} messages counts {} bytes",
                    session.pending_len(),
                    session.pending_bytes()
                ));
            }
        }
        let peer_max = [self.receive_max[1], self.receive_max[0]];
        for ((session, name), max) in [(&self.client, "client"), (&self.server, "server")]
            .into_iter()
            .zip(peer_max)
        {
            if session.send_window_used() > usize::from(max)
                || session.inflight_len() > usize::from(max)
            {
                return Err(format!(
                    "{name} has {} live / {} in flight, peer receive maximum {max}",
                    session.send_window_used(),
                    session.inflight_len()
                ));
            }
        }
        if self.client.incoming_qos2_len() > usize::from(self.receive_max[0])
            || self.server.incoming_qos2_len() > usize::from(self.receive_max[1])
        {
            return Err("inbound QoS 2 identifiers above the receive maximum".into());
        }
        if self.connected && (self.client.is_closed() || self.server.is_closed()) {
            self.timeouts += 1;
            // A side closed (keep-alive): the network connection goes too.
            self.transmit()?;
            self.break_link()?;
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
        match self.rng.random_range(0..100) {
            0..=2 if self.connected => self.break_link()?,
            0..=2 => self.connect()?,
            3..=14 => self.publish_up()?,
            15..=26 => self.publish_down()?,
            27..=51 => self.deliver_c2s()?,
            52..=76 => self.deliver_s2c()?,
            77..=81 => self.ack(true)?,
            82..=86 => self.ack(false)?,
            _ => self.tick()?,
        }
        if !self.connected && self.rng.random_bool(0.3) {
            self.connect()?;
        }
        self.after_step()
    }

    fn release(&mut self) {
        match self.spare {
            Spare::Keep => {}
            Spare::Release => {
                self.client.release_spare_capacity();
                self.server.release_spare_capacity();
            }
            Spare::Dormant => {
                self.naps +=
                    usize::from(nap(&mut self.client)) + usize::from(nap(&mut self.server));
            }
        }
    }

    /// No more faults: deliver until both directions are complete.
    fn settle(&mut self) -> Result<(), String> {
        for _ in 0..10_000 {
            if !self.connected {
                self.connect()?;
            }
            let idle = self.c2s.is_empty() && self.s2c.is_empty();
            let done = idle
                && self.client.is_connected()
                && self.server.is_connected()
                && self.client.inflight_len() == 0
                && self.server.inflight_len() == 0
                && self.client.pending_len() == 0
                && self.server.pending_len() == 0;
            if done {
                return Ok(());
            }
            if !self.up.to_ack.is_empty() {
                self.ack(true)?;
            } else if !self.down.to_ack.is_empty() {
                self.ack(false)?;
            } else if !self.c2s.is_empty() {
                self.deliver_c2s()?;
            } else if !self.s2c.is_empty() {
                self.deliver_s2c()?;
            } else {
                self.now += Duration::from_millis(500);
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
            }
            self.after_step()?;
        }
        Err(format!(
            "did not settle: client inflight {} pending {} connected {}; server inflight {} pending {} connected {}; \
             links {}/{}; to ack {:?}/{:?}",
            self.client.inflight_len(),
            self.client.pending_len(),
            self.client.is_connected(),
            self.server.inflight_len(),
            self.server.pending_len(),
            self.server.is_connected(),
            self.c2s.len(),
            self.s2c.len(),
            self.up.to_ack,
            self.down.to_ack,
        ))
    }
}

/// `SIM_TRACE=1` prints every delivered packet (use with `SIM_SEED`).
fn trace(line: impl FnOnce() -> String) {
    if std::env::var_os("SIM_TRACE").is_some() {
        eprintln!("{}", line());
    }
}

fn brief(p: &Packet) -> String {
    match p {
        Packet::Publish(p) => format!(
            "PUBLISH q{} id={:?} dup={} #{}",
            p.qos.as_u8(),
            p.packet_id.map(PacketId::get),
            p.dup,
            number(p).unwrap_or(u32::MAX)
        ),
        Packet::PubAck(a) => format!("PUBACK {}", a.packet_id),
        Packet::PubRec(a) => format!("PUBREC {}", a.packet_id),
        Packet::PubRel(a) => format!("PUBREL {}", a.packet_id),
        Packet::PubComp(a) => format!("PUBCOMP {}", a.packet_id),
        other => format!("{:?}", other.packet_type()),
    }
}

/// A first transmission (DUP 0) of a QoS 1/2 PUBLISH must use an identifier
/// that is not in flight.
fn check_first_send(flow: &mut Flow, packet: &Packet) -> Result<(), String> {
    if let Packet::Publish(p) = packet
        && let Some(id) = p.packet_id
        && !p.dup
        && !flow.outstanding.insert(id)
    {
        return Err(format!("packet identifier {id} reused while in flight"));
    }
    Ok(())
}

/// An event at the receiving end of `inbound` / the sending end of `outbound`.
fn record(inbound: &mut Flow, outbound: &mut Flow, event: Event) -> Result<(), String> {
    match event {
        Event::Message(p) => {
            if let Some(id) = p.packet_id {
                inbound.to_ack.push(id);
            }
            let n = number(&p)?;
            let count = inbound.delivered.entry(n).or_insert(0);
            *count += 1;
            let (qos, topic) = *inbound.sent.get(n as usize).ok_or("unknown message")?;
            if p.topic != topic {
                return Err(format!("message {n} on {} instead of {topic}", p.topic));
            }
            if *count == 1 && qos != QoS::AtMostOnce {
                inbound.first_order.entry(topic).or_default().push(n);
            }
        }
        Event::PublishComplete { packet_id, .. } => {
            let n = outbound
                .ids
                .remove(&packet_id)
                .ok_or(format!("completion for unknown id {packet_id}"))?;
            *outbound.completed.entry(n).or_insert(0) += 1;
            outbound.outstanding.remove(&packet_id);
        }
        Event::PublishDropped {
            packet_id: Some(id),
            reason: DropReason::SessionDiscarded,
        } => {
            let n = outbound
                .ids
                .remove(&id)
                .ok_or(format!("drop of unknown id {id}"))?;
            outbound.discarded.insert(n);
            outbound.outstanding.remove(&id);
        }
        Event::PublishDropped { packet_id, reason } => {
            return Err(format!("message {packet_id:?} dropped: {reason:?}"));
        }
        _ => {}
    }
    Ok(())
}

fn check_flow(flow: &Flow, name: &str) -> Result<(), String> {
    for (n, (qos, _)) in flow.sent.iter().enumerate() {
        let n = u32::try_from(n).map_err(|e| e.to_string())?;
        let delivered = flow.delivered.get(&n).copied().unwrap_or(0);
        let completed = flow.completed.get(&n).copied().unwrap_or(0);
        if flow.discarded.contains(&n) {
            // Discarded with its session: at most once is all that is left.
            if *qos == QoS::ExactlyOnce && delivered > 1 {
                return Err(format!(
                    "{name}: discarded QoS 2 message {n} delivered {delivered}x"
                ));
            }
            continue;
        }
        match qos {
            QoS::AtMostOnce if delivered > 1 => {
                return Err(format!("{name}: QoS 0 message {n} delivered {delivered}x"));
            }
            QoS::AtLeastOnce if delivered == 0 => {
                return Err(format!("{name}: QoS 1 message {n} lost"));
            }
            QoS::ExactlyOnce if delivered != 1 => {
                return Err(format!("{name}: QoS 2 message {n} delivered {delivered}x"));
            }
            QoS::AtLeastOnce | QoS::ExactlyOnce if completed != 1 => {
                return Err(format!("{name}: message {n} completed {completed}x"));
            }
            _ => {}
        }
    }
    for (topic, order) in &flow.first_order {
        if order.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("{name}: order broken on {topic}: {order:?}"));
        }
    }
    Ok(())
}

fn run(seed: u64) -> Result<Sim, String> {
    run_with(Sim::new(seed))
}

fn run_with(mut sim: Sim) -> Result<Sim, String> {
    sim.connect()?;
    sim.after_step()?;
    let steps = sim.rng.random_range(50..400);
    for _ in 0..steps {
        sim.step()?;
    }
    sim.settle()?;
    check_flow(&sim.up, "client->server")?;
    check_flow(&sim.down, "server->client")?;
    Ok(sim)
}

#[test]
fn simulation_over_many_seeds() {
    // MQTT-4.3.1-1 MQTT-4.4.0-1 MQTT-4.6.0-1 v5:MQTT-4.6.0-5 v5:MQTT-4.6.0-6 v5:MQTT-4.9.0-2 v5:MQTT-4.3.3-10
    // v3:MQTT-4.6.0-5 v3:MQTT-4.6.0-6 v5:MQTT-4.2.0-1
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2000);
            (0..n).collect()
        }
    };
    let (mut breaks, mut messages, mut clean_starts, mut timeouts) = (0, 0, 0, 0);
    for seed in seeds {
        match run(seed) {
            Ok(sim) => {
                breaks += sim.breaks;
                clean_starts += sim.clean_starts;
                timeouts += sim.timeouts;
                messages += sim.up.sent.len() + sim.down.sent.len();
            }
            Err(e) => {
                panic!("simulation failed for seed {seed} (replay with SIM_SEED={seed}): {e}")
            }
        }
    }
    eprintln!(
        "simulation: {messages} messages, {breaks} broken connections \
         ({timeouts} closed by a timeout), {clean_starts} clean starts"
    );
    assert!(
        breaks > 0 && messages > 0,
        "the simulation exercised nothing"
    );
}

/// Runs `n` seeds (`SIM_SEEDS`, default 300) plain and with `spare`, and
/// checks that both send the same packets, report the same events and answer
/// every query the same; returns the number of `DormantSession` round trips.
fn same_as_plain(spare: Spare) -> usize {
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300u64);
    let mut naps = 0;
    for seed in 0..n {
        let plain = run_with(Sim::with(seed, Spare::Keep, true));
        let released = run_with(Sim::with(seed, spare, true));
        if let Ok(sim) = &released {
            naps += sim.naps;
        }
        match (plain, released) {
            (Ok(plain), Ok(released)) => {
                let (a, b) = (
                    plain.log.unwrap_or_default(),
                    released.log.unwrap_or_default(),
                );
                if let Some((i, (x, y))) = a.iter().zip(&b).enumerate().find(|(_, (x, y))| x != y) {
                    panic!("seed {seed}, line {i}: without release\n  {x}\nwith release\n  {y}");
                }
                assert_eq!(a.len(), b.len(), "seed {seed}: log lengths differ");
                assert!(!a.is_empty());
            }
            (plain, released) => panic!(
                "seed {seed}: without release {:?}, with release {:?}",
                plain.err(),
                released.err()
            ),
        }
    }
    naps
}

#[test]
fn releasing_spare_capacity_changes_nothing() {
    // (memory, no spec statement) `release_spare_capacity` drops the parts of
    // a session that hold nothing (outbound half, inbound QoS 2 store,
    // queues) and they are created again on use: the same simulation with a
    // release before and after every step sends the same packets, reports
    // the same events and answers every query the same.
    same_as_plain(Spare::Release);
}

#[test]
fn putting_idle_sessions_to_sleep_changes_nothing() {
    // (memory, no spec statement) A broker keeps an idle connection's session
    // as a `DormantSession`: the same simulation with both sessions put to
    // sleep and woken before and after every step, whenever they allow it,
    // sends the same packets, reports the same events and answers every
    // query the same (keep-alive and connect deadlines, inbound QoS 2
    // identifiers, packet identifier cursor and topic aliases survive).
    let naps = same_as_plain(Spare::Dormant);
    eprintln!("{naps} round trips through DormantSession");
    assert!(naps > 1000, "only {naps} sessions were put to sleep");
}
