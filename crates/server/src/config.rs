//! Server settings in layers: built-in defaults, then a TOML file
//! (`--config`), then `ARBITER_*` environment variables, then flags. clap
//! reads the last two (a flag beats its variable); [`Config::layered`]
//! puts them over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Deserialize;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `arbiter serve` needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where RocksDB keeps its files.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (health endpoints).
    pub http_addr: SocketAddr,
    /// Tokens file; without one, an admin token is created in the data dir.
    pub tokens: Option<PathBuf>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Sync the WAL before acknowledging writes (turn off for benchmarks only).
    pub fsync: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./arbiter-data"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: None,
            log_format: LogFormat::Text,
            fsync: true,
        }
    }
}

/// Flags of `arbiter serve`; each also reads its `ARBITER_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below.
    #[arg(long, env = "ARBITER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./arbiter-data].
    #[arg(long, env = "ARBITER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "ARBITER_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "ARBITER_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Tokens file (TOML [[tokens]] entries).
    #[arg(long, env = "ARBITER_TOKENS", value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "ARBITER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Sync the WAL before acknowledging writes [default: true]; false is
    /// for benchmarks only.
    #[arg(long, env = "ARBITER_FSYNC", value_name = "BOOL")]
    pub fsync: Option<bool>,
}

impl Config {
    /// Parses a TOML config file's text.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).context("invalid config file")
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Defaults, then the file named by `args.config`, then `args`.
    pub fn layered(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(args);
        Ok(config)
    }

    fn apply(&mut self, args: &ServeArgs) {
        let ServeArgs {
            config: _,
            data_dir,
            grpc_addr,
            http_addr,
            tokens,
            log_format,
            fsync,
        } = args.clone();
        if let Some(v) = data_dir {
            self.data_dir = v;
        }
        if let Some(v) = grpc_addr {
            self.grpc_addr = v;
        }
        if let Some(v) = http_addr {
            self.http_addr = v;
        }
        if tokens.is_some() {
            self.tokens = tokens;
        }
        if let Some(v) = log_format {
            self.log_format = v;
        }
        if let Some(v) = fsync {
            self.fsync = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults() {
        let c = Config::default();
        assert_eq!(c.data_dir, PathBuf::from("./arbiter-data"));
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.fsync);
        assert_eq!(Config::from_toml("").ok(), Some(c));
    }

    #[test]
    fn flags_override_the_file() {
        let mut c =
            Config::from_toml("grpc_addr = \"0.0.0.0:1\"\nlog_format = \"json\"\n").unwrap_or_default();
        assert_eq!(c.log_format, LogFormat::Json);
        c.apply(&ServeArgs {
            grpc_addr: Some(SocketAddr::from(([127, 0, 0, 1], 2))),
            ..Default::default()
        });
        assert_eq!(c.grpc_addr.port(), 2);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml("grpc_adr = \"x\"").is_err());
    }
}
