//! Prometheus metrics over HTTP (`[metrics] bind`): the broker's
//! [`Stats`](fulmar_broker::Stats) (connections, clients, sessions,
//! subscriptions, retained, dropped, packets / messages / bytes in and out),
//! recorded with the `metrics` crate when scraped and rendered by
//! `metrics-exporter-prometheus` at `GET /metrics`.
//!
//! The HTTP side is a minimal HTTP/1.1 responder (one request per
//! connection, at most 16 at a time, a bounded request head and timeouts):
//! a scrape endpoint needs no more, and it keeps hyper out of the build.

use std::net::SocketAddr;
use std::time::Duration;

use fulmar_bridge::MqttBridge;
use fulmar_broker::BrokerHandle;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head read before answering.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once; more connections are closed at once.
const MAX_CONNECTIONS: usize = 16;

/// Installs the Prometheus recorder, binds `bind` and serves `/metrics` in
/// a task until the runtime stops. Returns the bound address.
pub(crate) async fn start(
    bind: &str,
    broker: BrokerHandle,
    bridges: Option<MqttBridge>,
) -> Result<SocketAddr, String> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("metrics: {e}"))?;
    describe();
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen on {bind} (metrics.bind): {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {bind} (metrics.bind): {e}"))?;
    tokio::spawn(serve(listener, handle, Sources { broker, bridges }));
    Ok(addr)
}

fn describe() {
    metrics::describe_gauge!("fulmar_connections", "Open network connections.");
    metrics::describe_gauge!("fulmar_sessions", "Sessions, connected or not.");
    metrics::describe_gauge!(
        "fulmar_subscriptions",
        "Subscriptions, in-process ones and shared group memberships included."
    );
    metrics::describe_gauge!(
        "fulmar_shared_subscriptions",
        "Shared group memberships ($share/{group}/{filter}), of fulmar_subscriptions."
    );
    metrics::describe_gauge!("fulmar_retained_messages", "Retained messages.");
    metrics::describe_counter!(
        "fulmar_dropped_messages_total",
        "Messages dropped undelivered: a queue was full, a message over a limit was refused, or a subscription was withdrawn."
    );
    metrics::describe_gauge!(
        "fulmar_blocked_publishers",
        "Publishers held back because a subscriber's queue is full (backpressure policy)."
    );
    metrics::describe_gauge!(
        "fulmar_clients_connected",
        "Accepted MQTT clients currently connected."
    );
    metrics::describe_gauge!(
        "fulmar_clients_maximum",
        "The most MQTT clients connected at once since the broker started."
    );
    metrics::describe_gauge!(
        "fulmar_connections_hibernating",
        "Idle connections hibernating (no task, socket watched by the hibernation thread)."
    );
    metrics::describe_gauge!(
        "fulmar_read_ahead_bytes",
        "Bytes set aside for the rest of large packets being read (limits.max_read_ahead_bytes)."
    );
    for (name, help) in COUNTERS.iter().chain(BRIDGE_COUNTERS) {
        metrics::describe_counter!(*name, *help);
    }
    metrics::describe_gauge!(
        "fulmar_bridge_connected",
        "1 while a bridge is connected to its remote broker (refused subscriptions or not), else 0."
    );
    metrics::describe_gauge!(
        "fulmar_bridge_unsubscribed_filters",
        "Filters of a bridge's in topics not subscribed on its remote broker at the moment (refused, or on their way)."
    );
}

/// The monotonic counters of [`Stats`](fulmar_broker::Stats), by metric name.
const COUNTERS: &[(&str, &str)] = &[
    (
        "fulmar_packets_received_total",
        "MQTT packets received from clients.",
    ),
    ("fulmar_packets_sent_total", "MQTT packets sent to clients."),
    (
        "fulmar_messages_received_total",
        "PUBLISH packets received from clients.",
    ),
    (
        "fulmar_messages_sent_total",
        "PUBLISH packets sent to clients.",
    ),
    (
        "fulmar_messages_sent_preencoded_total",
        "PUBLISH packets sent from an encoding shared with other subscribers of the message.",
    ),
    (
        "fulmar_publish_bytes_received_total",
        "Payload bytes of the PUBLISH packets received from clients.",
    ),
    (
        "fulmar_publish_bytes_sent_total",
        "Payload bytes of the PUBLISH packets sent to clients.",
    ),
    (
        "fulmar_bytes_received_total",
        "MQTT bytes read from client connections (TLS and WebSocket framing not counted).",
    ),
    (
        "fulmar_bytes_sent_total",
        "MQTT bytes written to client connections (TLS and WebSocket framing not counted).",
    ),
    (
        "fulmar_connects_total",
        "CONNECT packets answered, refused ones included.",
    ),
    (
        "fulmar_connections_accepted_total",
        "Network connections accepted.",
    ),
    (
        "fulmar_sessions_expired_total",
        "Sessions ended by their Session Expiry Interval while their client was away.",
    ),
];

/// Where the figures come from.
struct Sources {
    broker: BrokerHandle,
    bridges: Option<MqttBridge>,
}

/// The counters of each bridge (`[[bridge]]`), labelled with its name.
const BRIDGE_COUNTERS: &[(&str, &str)] = &[
    (
        "fulmar_bridge_connects_total",
        "Connections a bridge made to its remote broker.",
    ),
    (
        "fulmar_bridge_messages_sent_total",
        "Messages a bridge published to its remote broker (QoS 1/2 acknowledged).",
    ),
    (
        "fulmar_bridge_messages_received_total",
        "Messages a bridge brought from its remote broker.",
    ),
    (
        "fulmar_bridge_messages_refused_total",
        "Messages the remote broker refused (an error reason code).",
    ),
    (
        "fulmar_bridge_filters_refused_total",
        "Times the remote broker (or the bridge's client, for a filter the remote announced it cannot take) refused a filter of a bridge's in topics.",
    ),
    (
        "fulmar_bridge_messages_dropped_total",
        "Messages for the remote broker dropped (queue full, connection lost, unmappable topic).",
    ),
];

/// Copies the broker's (and the bridges') current counters into the recorder.
#[allow(clippy::cast_precision_loss)] // Gauges are f64; counts stay far below 2^53.
fn record(sources: &Sources) {
    let broker = &sources.broker;
    for remote in sources.bridges.iter().flat_map(MqttBridge::stats) {
        let name = remote.name;
        metrics::gauge!("fulmar_bridge_connected", "bridge" => name.clone())
            .set(if remote.connected { 1.0 } else { 0.0 });
        metrics::gauge!("fulmar_bridge_unsubscribed_filters", "bridge" => name.clone())
            .set(remote.unsubscribed_filters as f64);
        let counts = [
            remote.connects,
            remote.sent,
            remote.received,
            remote.refused,
            remote.filters_refused,
            remote.dropped,
        ];
        for ((metric, _), value) in BRIDGE_COUNTERS.iter().zip(counts) {
            metrics::counter!(*metric, "bridge" => name.clone()).absolute(value);
        }
    }
    let stats = broker.stats();
    metrics::gauge!("fulmar_connections").set(stats.connections as f64);
    metrics::gauge!("fulmar_sessions").set(stats.sessions as f64);
    metrics::gauge!("fulmar_subscriptions").set(stats.subscriptions as f64);
    metrics::gauge!("fulmar_shared_subscriptions").set(stats.shared_subscriptions as f64);
    metrics::gauge!("fulmar_retained_messages").set(stats.retained as f64);
    metrics::counter!("fulmar_dropped_messages_total").absolute(stats.dropped_messages);
    metrics::gauge!("fulmar_blocked_publishers").set(stats.blocked_publishers as f64);
    metrics::gauge!("fulmar_clients_connected").set(stats.clients_connected as f64);
    metrics::gauge!("fulmar_clients_maximum").set(stats.clients_maximum as f64);
    metrics::gauge!("fulmar_connections_hibernating").set(stats.connections_hibernating as f64);
    metrics::gauge!("fulmar_read_ahead_bytes").set(stats.read_ahead_bytes as f64);
    let counts = [
        stats.packets_received,
        stats.packets_sent,
        stats.messages_received,
        stats.messages_sent,
        stats.messages_sent_preencoded,
        stats.publish_bytes_received,
        stats.publish_bytes_sent,
        stats.bytes_received,
        stats.bytes_sent,
        stats.connects,
        stats.connections_accepted,
        stats.sessions_expired,
    ];
    for ((name, _), value) in COUNTERS.iter().zip(counts) {
        metrics::counter!(*name).absolute(value);
    }
}

async fn serve(listener: TcpListener, handle: PrometheusHandle, sources: Sources) {
    let sources = std::sync::Arc::new(sources);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // One task per request, so that a client that sends nothing
                // holds up no scrape; over the limit, closed at once.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("metrics: too many requests at once");
                    continue;
                };
                let (handle, sources) = (handle.clone(), sources.clone());
                tokio::spawn(async move {
                    let answered =
                        tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &handle, &sources))
                            .await;
                    match answered {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::debug!(%error, "metrics request failed"),
                        Err(_) => tracing::debug!("metrics request timed out"),
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The request line's method and path, once the head is complete.
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    Some((parts.next()?, parts.next()?))
}

async fn answer(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    sources: &Sources,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while head.len() < MAX_REQUEST && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(complete, Ok(Ok(()))) {
        return Ok(());
    }
    let (status, content_type, body) = match request_target(&head) {
        Some(("GET", path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            record(sources);
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
        Some(("GET", _)) => (
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::request_target;

    #[test]
    fn the_request_line_is_parsed() {
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_target(b"POST / HTTP/1.1\r\n\r\n"),
            Some(("POST", "/"))
        );
        assert_eq!(request_target(b"GET"), None);
        assert_eq!(request_target(b"\xff\xfe /x\r\n\r\n"), None);
    }
}
