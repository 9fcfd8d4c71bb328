//! `fulmar broker`: runs a broker until SIGINT or SIGTERM; SIGHUP reloads
//! the password file, the ACL file and the TLS certificates.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use std::path::Path;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use clap::{ArgAction, Args};
use fulmar_broker::{Broker, BrokerBuilder, BrokerHandle, DiskStore, Listener, TlsConfig};
use fulmar_codec::QoS;

use crate::acl::{Acl, AclAuthorizer};
use crate::config::{Config, DEFAULT_CONFIG, ListenerConfig, Protocol, SessionStoreKind};
use crate::logging::{self, LogFormat};
use crate::passwd::{AuthSettings, FileAuthenticator, PasswordFile};

/// Options of `fulmar broker`.
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// Configuration file (TOML); see --print-default-config.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print a commented configuration file with the defaults, and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Print the configuration the broker would run with (the file given
    /// with -c and the command line applied) as fulmar's TOML, with absolute
    /// paths, and exit: to see what a mosquitto.conf became, or to start a
    /// file from it.
    #[arg(long)]
    print_config: bool,
    /// TCP port of the first listener (0 picks a free port); with --bind,
    /// the port of every address given without one.
    #[arg(short, long)]
    port: Option<u16>,
    /// Listen on this address instead of the configured listeners: an IP
    /// address (with --port, default 1883) or ADDR:PORT. May be repeated.
    #[arg(long = "bind", value_name = "ADDR")]
    bind: Vec<String>,
    /// Directory of the broker's store (persistent sessions, queued QoS 1/2
    /// messages, retained messages), created if missing; default
    /// `fulmar-data`, or the configuration's `[persistence] dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep nothing on disk: sessions and retained messages live in memory.
    #[arg(long, conflicts_with = "data_dir")]
    no_persistence: bool,
    /// Join a cluster of fulmar brokers over NATS JetStream at this URL
    /// (`nats://127.0.0.1:4222`); see `[cluster]` in the configuration.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// More log output: -v debug, -vv trace (RUST_LOG takes precedence).
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
    /// Log format (default: the configuration's, else text).
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Check the configuration and the files it names (password file, ACL
    /// file, certificates and keys) without starting, print "configuration
    /// OK" or what is wrong, and exit: before a start or a SIGHUP reload.
    #[arg(long)]
    check_config: bool,
}

/// `ADDR` with `port` unless it already names one.
fn listen_addr(addr: &str, port: u16) -> String {
    match addr.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) if addr.parse::<SocketAddr>().is_ok() => addr.to_owned(),
        Err(_) => format!("{addr}:{port}"),
    }
}

/// `ADDR:PORT` with its port replaced.
fn with_port(bind: &str, port: u16) -> String {
    if let Ok(addr) = bind.parse::<SocketAddr>() {
        return SocketAddr::new(addr.ip(), port).to_string();
    }
    match bind.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{port}"),
        None => format!("{bind}:{port}"),
    }
}

/// The configuration after the command-line overrides (not checked yet).
fn effective_config(args: &BrokerArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.bind.is_empty() {
        let port = args.port.unwrap_or(1883);
        config.listeners = args
            .bind
            .iter()
            .map(|addr| ListenerConfig::tcp(listen_addr(addr, port)))
            .collect();
    } else if let (Some(port), Some(first)) = (args.port, config.listeners.first_mut()) {
        first.bind = with_port(&first.bind, port);
    }
    if let Some(dir) = &args.data_dir {
        config.persistence.dir.clone_from(dir);
        config.persistence.enabled = true;
    }
    // Relative to the working directory (`--data-dir`, or the default
    // without a file): made absolute, so that `--print-config` saved
    // elsewhere names the same directory (a file's paths are relative to
    // the file).
    config.persistence.dir = std::path::absolute(&config.persistence.dir).map_err(|e| {
        format!(
            "the data directory {}: {e}",
            config.persistence.dir.display()
        )
    })?;
    if args.no_persistence {
        config.persistence.enabled = false;
    }
    if let Some(url) = &args.cluster {
        config.cluster.urls.retain(|u| u != url);
        config.cluster.urls.insert(0, url.clone());
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    match args.verbose {
        0 => {}
        1 => "debug".clone_into(&mut config.log.level),
        _ => "trace".clone_into(&mut config.log.level),
    }
    Ok(config)
}

/// The TLS configuration of listener number `n`, read from its PEM files.
fn tls_config(n: usize, listener: &ListenerConfig) -> Result<TlsConfig, String> {
    let at = || format!("listener {n} ({})", listener.bind);
    let read = |key: &str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, String> {
        path.as_ref()
            .map(|p| {
                std::fs::read(p).map_err(|e| format!("{}: {key} = {}: {e}", at(), p.display()))
            })
            .transpose()
    };
    let (Some(cert), Some(key)) = (read("cert", &listener.cert)?, read("key", &listener.key)?)
    else {
        return Err(format!("{}: needs `cert` and `key`", at()));
    };
    let mut tls = TlsConfig::new(cert, key);
    if listener.has_client_ca() {
        let mut cas = read("client_ca", &listener.client_ca)?.unwrap_or_default();
        if let Some(dir) = &listener.client_ca_path {
            let certs = crate::ca_path::certificates(dir)
                .map_err(|e| format!("{}: client_ca_path = {e}", at()))?;
            if !cas.is_empty() && !cas.ends_with(b"\n") {
                cas.push(b'\n');
            }
            cas.extend(crate::ca_path::pem_bundle(&certs));
        }
        tls = tls
            .client_ca_pem(cas)
            .client_certificate_optional(!listener.require_certificate.unwrap_or(true));
    }
    if let Some(crl) = read("crl_file", &listener.crl_file)? {
        tls = tls.client_crl_pem(crl);
    }
    Ok(tls.tls13_only(listener.tls_version.as_deref() == Some("1.3")))
}

/// Loads every file the configuration names, as a start would, and says
/// what is wrong with the first that does not load.
fn check_files(config: &Config) -> Result<(), String> {
    if let Some(path) = &config.auth.password_file {
        PasswordFile::load(path)?;
    }
    if let Some(path) = &config.auth.acl_file {
        Acl::load(path)?;
    }
    for (i, bridge) in config.bridges.iter().enumerate() {
        bridge.to_remote(i + 1)?;
    }
    for (n, listener, _) in tls_listeners(&config.listeners, &[]) {
        tls_config(n, listener)?.check().map_err(|e| match e {
            fulmar_broker::BrokerError::Tls { reason, .. } => {
                format!("listener {n} ({}): {reason}", listener.bind)
            }
            other => other.to_string(),
        })?;
    }
    Ok(())
}

/// The TLS and secure WebSocket listeners of `listeners`, numbered from 1,
/// each with its bound address from `bound` when there is one.
fn tls_listeners<'a>(
    listeners: &'a [ListenerConfig],
    bound: &'a [SocketAddr],
) -> impl Iterator<Item = (usize, &'a ListenerConfig, Option<SocketAddr>)> {
    listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l.protocol, Protocol::Tls | Protocol::Wss))
        .map(|(i, l)| (i + 1, l, bound.get(i).copied()))
}

/// Adds listener number `n` to the builder, reading its PEM files.
fn add_listener(
    builder: BrokerBuilder,
    n: usize,
    listener: &ListenerConfig,
) -> Result<BrokerBuilder, String> {
    let tls = || tls_config(n, listener);
    let addr = listener.bind.clone();
    let path = || listener.path.clone().unwrap_or_else(|| "/mqtt".to_owned());
    let mut new = match listener.protocol {
        Protocol::Tcp => Listener::tcp(addr),
        Protocol::Tls => Listener::tls(addr, tls()?),
        Protocol::Ws => Listener::ws(addr, path()),
        Protocol::Wss => Listener::wss(addr, path(), tls()?),
    };
    if let Some(n) = listener.max_connections {
        new = new.max_connections(n);
    }
    if let Some(qos) = listener.maximum_qos {
        let qos = QoS::try_from(qos)
            .map_err(|_| format!("listener {n}: maximum_qos = {qos}: must be 0, 1 or 2"))?;
        new = new.maximum_qos(qos);
    }
    if let Some(max) = listener.topic_alias_maximum {
        new = new.topic_alias_maximum(max);
    }
    if let Some(bytes) = listener.send_buffer_size {
        new = new.send_buffer_size(bytes);
    }
    if let Some(bytes) = listener.receive_buffer_size {
        new = new.receive_buffer_size(bytes);
    }
    if let Some(prefix) = &listener.mount_point {
        new = new.mount_point(prefix.clone());
    }
    Ok(builder.listener(new))
}

/// Runs the broker until SIGINT or SIGTERM, then shuts it down gracefully;
/// on SIGHUP, reloads the password file, the ACL file and the certificates.
/// Raises this process's soft limit on open files to its hard limit, and
/// returns the limit now (`None` where there is none to raise or reading it
/// failed). A broker holds a descriptor per connection, and the usual soft
/// limit (1024) would refuse connections past about a thousand; the hard
/// limit is what the administrator allows.
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

pub(crate) async fn run(args: BrokerArgs) -> Result<(), String> {
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let config = effective_config(&args)?;
    if args.print_config {
        let text = toml::to_string(&config).map_err(|e| format!("cannot print it: {e}"))?;
        print!("{text}");
        return Ok(());
    }
    config.check()?;
    if args.check_config {
        check_files(&config)?;
        println!("configuration OK");
        return Ok(());
    }
    logging::init(&config.log.level, config.log.format)?;
    // SIGHUP before anything else: one that came first would end the
    // process. SIGINT and SIGTERM still do, until the broker has started.
    let hangup = Hangup::new()?;

    let mut limits = config.limits.to_limits()?;
    limits.sys_interval = (config.sys.interval_secs > 0)
        .then(|| std::time::Duration::from_secs(config.sys.interval_secs));
    if let Some(open_files) = raise_open_files_limit() {
        let wanted = u64::try_from(limits.max_connections)
            .unwrap_or(u64::MAX)
            .saturating_add(64);
        // usize::MAX: no limit (a mosquitto.conf's -1), nothing to compare.
        if limits.max_connections != usize::MAX && open_files < wanted {
            tracing::warn!(
                open_files,
                max_connections = limits.max_connections,
                "the open files limit is below max_connections: connections past it \
                 are refused by the system (raise the hard limit, e.g. `ulimit -Hn`, \
                 or LimitNOFILE= in a systemd unit)"
            );
        } else {
            tracing::debug!(open_files, "open files limit");
        }
    }
    let mut builder = Broker::builder().limits(limits);
    for (i, listener) in config.listeners.iter().enumerate() {
        builder = add_listener(builder, i + 1, listener)?;
    }
    let passwords = match &config.auth.password_file {
        Some(path) => {
            let file = PasswordFile::load(path)?;
            tracing::info!(users = file.len(), file = %path.display(), "password file loaded");
            Some(file)
        }
        None => None,
    };
    let allow_anonymous = config.auth.allow_anonymous.unwrap_or(passwords.is_none());
    let identity_as_username = config.auth.use_identity_as_username;
    let mut reload = Reload {
        config: config.clone(),
        settings: None,
        acl: None,
    };
    // With a configuration file, SIGHUP may change the password file and
    // `allow_anonymous`: the authenticator is there to apply them.
    if args.config.is_some() || passwords.is_some() || !allow_anonymous || identity_as_username {
        let settings = AuthSettings::shared(
            passwords,
            allow_anonymous,
            config.auth.client_id_prefix.clone(),
        );
        builder = builder.authenticator(FileAuthenticator {
            settings: settings.clone(),
            identity_as_username,
            hashing: crate::passwd::hashing_permits(),
            assigned_prefix: config.limits.assigned_client_id_prefix.clone(),
        });
        reload.settings = Some(settings);
    }
    if let Some(path) = &config.auth.acl_file {
        let acl = Arc::new(ArcSwapOption::from_pointee(Acl::load(path)?));
        tracing::info!(file = %path.display(), "ACL file loaded");
        builder = builder.authorizer(AclAuthorizer(acl.clone()));
        reload.acl = Some(acl);
    }

    let cluster = match config.cluster.to_config()? {
        Some(cluster_config) => {
            let urls = cluster_config.urls.join(", ");
            let cluster = fulmar_cluster::Cluster::connect(cluster_config)
                .await
                .map_err(|e| format!("cluster ({urls}): {e}"))?;
            builder = builder.bridge(cluster.bridge());
            tracing::info!(%urls, "cluster: connected to NATS");
            // Larger messages would reach this node's subscribers only.
            let cluster_max = cluster.max_packet_size();
            if config.limits.max_packet_size.get() > cluster_max
                && let Some(max) = std::num::NonZeroU32::new(cluster_max)
            {
                tracing::warn!(
                    configured = config.limits.max_packet_size.get(),
                    max_packet_size = cluster_max,
                    "cluster: maximum packet size lowered to what the NATS servers carry \
                     (raise max_payload in their configuration for larger messages)"
                );
                builder = builder.max_packet_size(max);
            }
            Some(cluster)
        }
        None => None,
    };
    let bridges = match config.bridges.as_slice() {
        [] => None,
        tables => {
            let remotes = tables
                .iter()
                .enumerate()
                .map(|(i, b)| b.to_remote(i + 1))
                .collect::<Result<Vec<_>, _>>()?;
            let bridges = fulmar_bridge::MqttBridge::new(remotes).map_err(|e| e.to_string())?;
            builder = builder.bridge(bridges.bridge());
            Some(bridges)
        }
    };
    // Before the store is opened (with JetStream, it holds this node id's
    // sessions) and before any client is accepted: a live namesake refuses
    // this instance here, not after it served that node's sessions.
    if let Some(cluster) = &cluster
        && let Err(error) = cluster.claim_node_id().await
    {
        cluster.shutdown().await;
        return Err(format!("cluster: {error}"));
    }
    let persistence = &config.persistence;
    if persistence.enabled {
        if let Some(cluster) = &cluster
            && config.cluster.session_store == SessionStoreKind::Jetstream
        {
            let store = match cluster.session_store().await {
                Ok(store) => store,
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(format!("cluster session store: {e}"));
                }
            };
            tracing::info!("sessions kept in JetStream");
            builder = builder.store(store).durability(persistence.durability());
        } else {
            let dir = &persistence.dir;
            let store = match DiskStore::open(dir) {
                Ok(store) => store,
                Err(e) => {
                    if let Some(cluster) = &cluster {
                        cluster.shutdown().await;
                    }
                    return Err(format!("the store in {}: {e}", dir.display()));
                }
            };
            tracing::info!(file = %store.path().display(), "store opened");
            builder = builder
                .store(Arc::new(store))
                .durability(persistence.durability());
        }
    }
    let broker = match builder.start().await {
        Ok(broker) => broker,
        Err(e) => {
            // The node id claimed is given back at once (not left to expire).
            if let Some(cluster) = &cluster {
                cluster.shutdown().await;
            }
            return Err(e.to_string());
        }
    };
    // SIGINT and SIGTERM stop the running broker cleanly from here on, before
    // anything says it listens (one sent right after "listening on" ended the
    // process by the default action). A signal that arrives before the loop
    // below waits for it.
    let mut signals = match Signals::new(hangup) {
        Ok(signals) => signals,
        Err(error) => {
            broker.shutdown().await;
            if let Some(cluster) = &cluster {
                cluster.shutdown().await;
            }
            return Err(error);
        }
    };
    if let Some(cluster) = &cluster
        && let Err(error) = cluster.attach(&broker).await
    {
        broker.shutdown().await;
        cluster.shutdown().await;
        return Err(format!("cluster: {error}"));
    }
    if let Some(bridges) = &bridges {
        bridges.attach(&broker);
        for bridge in &config.bridges {
            tracing::info!(name = %bridge.name, address = %bridge.address, "bridge started");
        }
    }
    for addr in broker.local_addrs() {
        tracing::info!("listening on {addr}");
    }
    if let Some(bind) = &config.metrics.bind {
        match crate::prometheus::start(bind, broker.clone(), bridges.clone()).await {
            Ok(addr) => tracing::info!("metrics on http://{addr}/metrics"),
            Err(error) => {
                broker.shutdown().await;
                return Err(error);
            }
        }
    }
    // A cluster node that finds another live instance under its node id
    // stops serving (its broker is shut down): the process exits with an
    // error, so that whatever supervises it sees it.
    let failure = {
        let mut failure = None;
        let failed = async {
            match &cluster {
                Some(cluster) => cluster.failed().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(failed);
        loop {
            let received = tokio::select! {
                received = signals.next() => received?,
                reason = &mut failed => {
                    failure = Some(reason);
                    break;
                }
            };
            if received != Received::Reload {
                break;
            }
            tracing::info!(
                "SIGHUP: reading the configuration ([auth]), the password file, the ACL file \
                 and the certificates again"
            );
            let reloading = async {
                reload.reload(&args, &broker).await;
                reload_certificates(&config.listeners, &broker);
            };
            // A reload waits for every connection: a stop signal does not.
            tokio::select! {
                () = reloading => {}
                stop = signals.stop() => {
                    stop?;
                    break;
                }
            }
        }
        failure
    };
    tracing::info!("shutting down");
    if let Some(bridges) = bridges {
        bridges.shutdown().await;
    }
    broker.shutdown().await;
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    match failure {
        Some(reason) => Err(format!("cluster: {reason}")),
        None => Ok(()),
    }
}

/// What SIGHUP reads again: the configuration file's `[auth]` section
/// (`allow_anonymous`, `password_file`, `acl_file`), the password file and
/// the ACL file. Other settings are read at start only.
struct Reload {
    /// The configuration in force: as started, with `[auth]` as last applied.
    config: Config,
    /// The authenticator's settings, when there is one.
    settings: Option<Arc<ArcSwap<AuthSettings>>>,
    /// The ACL, when the broker started with one (a broker started without
    /// an ACL does not check what clients may read: one added later would
    /// not be enforced fully, so it waits for a restart).
    acl: Option<Arc<ArcSwapOption<Acl>>>,
}

impl Reload {
    /// Reads the configuration file again and applies its `[auth]`; a file
    /// that does not load keeps the previous version in force (the error is
    /// logged), and so does a configuration that does not load (its files
    /// are still read again). Clients the new settings would refuse are
    /// disconnected (5.0: 0x87 Not authorized), as mosquitto does: those of
    /// a user no longer in the password file, anonymous clients once
    /// `allow_anonymous` is off, and every client with a user name when no
    /// password file is left and anonymous clients are refused. A changed
    /// password disconnects nobody: passwords are not kept. After a new
    /// ACL, every connected client's subscriptions are checked against it
    /// and the ones it denies are withdrawn (disconnected sessions are
    /// checked when they resume).
    async fn reload(&mut self, args: &BrokerArgs, broker: &BrokerHandle) {
        let config = match effective_config(args).and_then(|c| c.check().map(|()| c)) {
            Ok(config) => {
                let mut others = config.clone();
                others.auth = self.config.auth.clone();
                if others != self.config {
                    tracing::warn!(
                        "the configuration changed beyond [auth]: those changes take effect \
                         after a restart"
                    );
                }
                config
            }
            Err(error) => {
                tracing::error!(%error, "configuration not reloaded: the previous one stays in force");
                self.config.clone()
            }
        };
        if let Some(settings) = &self.settings {
            self.apply_auth(&config, settings, broker);
        }
        match (&self.acl, &config.auth.acl_file) {
            (Some(acl), Some(path)) => match Acl::load(path) {
                Ok(new) => {
                    acl.store(Some(Arc::new(new)));
                    tracing::info!(file = %path.display(), "ACL file reloaded");
                    broker.reauthorize().await;
                    tracing::info!("subscriptions checked against the new ACL");
                }
                Err(error) => not_reloaded(path, &error),
            },
            (Some(acl), None) => {
                acl.store(None);
                tracing::info!("no ACL file any more: every topic is allowed");
            }
            (None, Some(path)) => tracing::warn!(
                file = %path.display(),
                "an ACL file was added: it takes effect after a restart"
            ),
            (None, None) => {}
        }
        self.config.auth = config.auth;
    }

    /// Applies `config`'s password file, `allow_anonymous` and
    /// `client_id_prefix`.
    fn apply_auth(&self, config: &Config, settings: &ArcSwap<AuthSettings>, broker: &BrokerHandle) {
        let old = settings.load_full();
        let passwords = match &config.auth.password_file {
            Some(path) => match PasswordFile::load(path) {
                Ok(file) => {
                    tracing::info!(users = file.len(), file = %path.display(), "password file reloaded");
                    Some(Arc::new(file))
                }
                Err(error) => {
                    not_reloaded(path, &error);
                    old.passwords.clone()
                }
            },
            None => None,
        };
        let allow_anonymous = config.auth.allow_anonymous.unwrap_or(passwords.is_none());
        if allow_anonymous != old.allow_anonymous {
            tracing::info!(
                allow_anonymous,
                "anonymous clients are now {}",
                if allow_anonymous {
                    "accepted"
                } else {
                    "refused"
                }
            );
        }
        let removed: HashSet<String> = match (&old.passwords, &passwords) {
            (Some(old), Some(new)) => old.removed_in(new).into_iter().collect(),
            _ => HashSet::new(),
        };
        let names_refused =
            passwords.is_none() && !allow_anonymous && !config.auth.use_identity_as_username;
        let anonymous_refused = !allow_anonymous && old.allow_anonymous;
        settings.store(Arc::new(AuthSettings {
            passwords,
            allow_anonymous,
            // New connections only: connected clients stay.
            client_id_prefix: config.auth.client_id_prefix.clone(),
        }));
        if !removed.is_empty() {
            tracing::info!(users = ?removed, "users removed from the password file: their clients are disconnected");
        }
        if removed.is_empty() && !names_refused && !anonymous_refused {
            return;
        }
        broker.disconnect_clients(
            move |client| match &client.username {
                Some(user) => names_refused || removed.contains(user),
                None => anonymous_refused,
            },
            fulmar_codec::DisconnectReasonCode::NotAuthorized,
        );
    }
}

/// Reads the certificate, key and client CA of every TLS and secure
/// WebSocket listener again (SIGHUP): new connections use them, open ones
/// keep theirs. A listener whose files do not load keeps what it had.
fn reload_certificates(listeners: &[ListenerConfig], broker: &BrokerHandle) {
    for (n, listener, addr) in tls_listeners(listeners, broker.local_addrs()) {
        let Some(addr) = addr else { continue };
        let reloaded = tls_config(n, listener)
            .and_then(|tls| broker.reload_tls(addr, &tls).map_err(|e| e.to_string()));
        match reloaded {
            Ok(()) => tracing::info!(listener = n, %addr, "certificate reloaded"),
            Err(error) => tracing::error!(
                listener = n,
                %error,
                "certificate not reloaded: the previous one stays in force"
            ),
        }
    }
}

fn not_reloaded(path: &Path, error: &str) {
    tracing::error!(file = %path.display(), %error, "not reloaded: the previous version stays in force");
}

/// What a signal asks of the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Received {
    /// SIGINT or SIGTERM: shut down.
    Stop,
    /// SIGHUP: reload the password file, the ACL file and the certificates.
    Reload,
}

/// The SIGHUP handler, installed first.
#[cfg(unix)]
struct Hangup(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Hangup {
    fn new() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup())
            .map(Self)
            .map_err(|e| format!("SIGHUP handler: {e}"))
    }
}

/// The signals `fulmar broker` answers once it runs.
#[cfg(unix)]
struct Signals {
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new(Hangup(hup): Hangup) -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            hup,
            int: signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?,
            term: signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?,
        })
    }

    async fn next(&mut self) -> Result<Received, String> {
        tokio::select! {
            _ = self.int.recv() => Ok(Received::Stop),
            _ = self.term.recv() => Ok(Received::Stop),
            _ = self.hup.recv() => Ok(Received::Reload),
        }
    }

    /// Ready on SIGINT or SIGTERM.
    async fn stop(&mut self) -> Result<(), String> {
        tokio::select! {
            _ = self.int.recv() => Ok(()),
            _ = self.term.recv() => Ok(()),
        }
    }
}

#[cfg(not(unix))]
struct Hangup;

#[cfg(not(unix))]
impl Hangup {
    fn new() -> Result<Self, String> {
        Ok(Self)
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new(_: Hangup) -> Result<Self, String> {
        Ok(Self)
    }

    async fn next(&mut self) -> Result<Received, String> {
        self.stop().await.map(|()| Received::Stop)
    }

    async fn stop(&mut self) -> Result<(), String> {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("Ctrl-C handler: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::{listen_addr, with_port};

    #[test]
    fn bind_addresses_take_the_port_unless_they_have_one() {
        assert_eq!(listen_addr("127.0.0.1", 1883), "127.0.0.1:1883");
        assert_eq!(listen_addr("::1", 1883), "[::1]:1883");
        assert_eq!(listen_addr("0.0.0.0:9000", 1883), "0.0.0.0:9000");
        assert_eq!(listen_addr("localhost", 1883), "localhost:1883");
    }

    #[test]
    fn the_port_flag_replaces_the_port() {
        assert_eq!(with_port("127.0.0.1:1883", 0), "127.0.0.1:0");
        assert_eq!(with_port("[::1]:1883", 7), "[::1]:7");
        assert_eq!(with_port("localhost:1883", 7), "localhost:7");
        assert_eq!(with_port("localhost", 7), "localhost:7");
    }
}
