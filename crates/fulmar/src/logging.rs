//! Logging set-up shared by the subcommands: tracing to stderr, human or JSON.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing to stderr. `RUST_LOG`, when set,
/// takes precedence over `level` (a filter such as `info` or
/// `fulmar_broker=debug,info`).
pub(crate) fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => {
            check_level(level)?;
            EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// The level names a filter directive may use.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Refuses a log level that is a misspelt level name: `EnvFilter` reads a
/// bare word such as `warning` as a target name, which silences every log
/// line (errors included). A directive for one target is `target=level`.
pub(crate) fn check_level(level: &str) -> Result<(), String> {
    for directive in level.split(',').map(str::trim) {
        let name = match directive.rsplit_once('=') {
            Some((_, name)) => name,
            None => directive,
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(name)) {
            return Err(format!(
                "log level {level:?}: {name:?} is not one of {} (one target: `target=level`)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_level;

    #[test]
    fn misspelt_levels_are_refused() {
        for good in [
            "info",
            "WARN",
            "fulmar_broker=debug,info",
            "off",
            "a::b=trace",
        ] {
            assert!(check_level(good).is_ok(), "{good}");
        }
        for bad in ["warning", "loud", "fulmar_broker=verbose", "info,", ""] {
            let error = check_level(bad).unwrap_err();
            assert!(error.contains("is not one of"), "{bad}: {error}");
        }
    }
}
