//! Server settings in layers: built-in defaults, then a TOML file
//! (`--config`), then `ARBITER_*` environment variables, then flags. clap
//! reads the last two (a flag beats its variable); [`Config::layered`]
//! puts them over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use arbiter_core::PolicyConfig;
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

/// Which storage engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// RocksDB in the data dir: one replica.
    #[default]
    Rocksdb,
    /// An etcd cluster: any number of replicas on one prefix serve as one.
    Etcd,
}

/// A duration in config files: `"168h"`, `"30m"`, `"90s"`.
mod duration {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
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
    /// Highest time limit a policy may set, in milliseconds.
    pub policy_max_timeout_ms: u64,
    /// Highest memory limit a policy may set, in bytes.
    pub policy_max_memory_bytes: u64,
    /// Largest policy module accepted, in bytes.
    pub policy_max_module_bytes: u64,
    /// Policy evaluations running at once.
    pub policy_concurrency: u32,
    /// Policy evaluations of one tenant running at once; default: half
    /// the cores, at least one.
    pub policy_tenant_concurrency: Option<u32>,
    /// How long an evaluation waits for a slot before the request is
    /// refused with RATE_LIMITED, in milliseconds.
    pub policy_slot_wait_ms: u64,
    /// Make instances of inline policies ahead of their evaluations on a
    /// thread of their own (for machines with idle cores).
    pub policy_prepare_ahead: bool,
    /// Most stored resources one list request reads: past it, the page
    /// ends early with a page token, however few items matched the filter.
    pub list_scan_limit: usize,
    /// Where compiled policy modules are cached; default `DATA_DIR/policy-cache`.
    pub policy_cache_dir: Option<PathBuf>,
    /// Tenants whose updates and deletes must carry an etag (`If-Match`):
    /// without one they fail with PRECONDITION_REQUIRED (HTTP 428).
    pub require_preconditions: Vec<String>,
    /// Public base URL of the HTTP API, for absolute problem type URIs;
    /// default: built from each request's `Host`.
    pub public_url: Option<String>,
    /// The storage engine.
    pub store: StoreKind,
    /// etcd client URLs (with `store = "etcd"`).
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every key in etcd; replicas on one prefix are one service.
    pub etcd_prefix: String,
    /// How long the change log keeps changes (watch resume, history).
    #[serde(with = "duration")]
    pub history_retention: std::time::Duration,
    /// How often the statistics of refused requests are written to the
    /// store (what a `kill -9` may lose).
    #[serde(with = "duration")]
    pub stats_flush_interval: std::time::Duration,
    /// TLS certificate chain (PEM): with `tls_key`, both listeners serve
    /// TLS only.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that must have signed every client's certificate (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Per-tenant quotas (`[[quotas]]`).
    pub quotas: Vec<arbiter_core::QuotaRule>,
    /// Token-bucket rate limits (`[[rate_limits]]`).
    pub rate_limits: Vec<crate::limits::RateLimitRule>,
    /// Request limits (`[limits]`).
    pub limits: crate::limits::RequestLimits,
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
            policy_max_timeout_ms: 2_000,
            policy_max_memory_bytes: 256 << 20,
            policy_max_module_bytes: 64 << 20,
            policy_concurrency: 64,
            policy_tenant_concurrency: None,
            policy_slot_wait_ms: 1_000,
            policy_prepare_ahead: false,
            list_scan_limit: 10_000,
            policy_cache_dir: None,
            require_preconditions: Vec::new(),
            public_url: None,
            store: StoreKind::Rocksdb,
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_prefix: "/arbiter".into(),
            history_retention: std::time::Duration::from_secs(168 * 60 * 60),
            stats_flush_interval: std::time::Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            quotas: Vec::new(),
            rate_limits: Vec::new(),
            limits: crate::limits::RequestLimits::default(),
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
    /// Highest policy time limit in ms [default: 2000].
    #[arg(long, env = "ARBITER_POLICY_MAX_TIMEOUT_MS", value_name = "MS")]
    pub policy_max_timeout_ms: Option<u64>,
    /// Highest policy memory limit in bytes [default: 268435456].
    #[arg(long, env = "ARBITER_POLICY_MAX_MEMORY_BYTES", value_name = "BYTES")]
    pub policy_max_memory_bytes: Option<u64>,
    /// Largest policy module in bytes [default: 67108864].
    #[arg(long, env = "ARBITER_POLICY_MAX_MODULE_BYTES", value_name = "BYTES")]
    pub policy_max_module_bytes: Option<u64>,
    /// Policy evaluations at once [default: 64].
    #[arg(long, env = "ARBITER_POLICY_CONCURRENCY", value_name = "N")]
    pub policy_concurrency: Option<u32>,
    /// Policy evaluations of one tenant at once [default: half the cores].
    #[arg(long, env = "ARBITER_POLICY_TENANT_CONCURRENCY", value_name = "N")]
    pub policy_tenant_concurrency: Option<u32>,
    /// Wait for a policy evaluation slot in ms [default: 1000].
    #[arg(long, env = "ARBITER_POLICY_SLOT_WAIT_MS", value_name = "MS")]
    pub policy_slot_wait_ms: Option<u64>,
    /// Make instances of inline policies ahead, on a thread of their own
    /// [default: false]; for machines whose cores the requests leave idle.
    #[arg(long, env = "ARBITER_POLICY_PREPARE_AHEAD", value_name = "BOOL")]
    pub policy_prepare_ahead: Option<bool>,
    /// Most resources one list request reads [default: 10000].
    #[arg(long, env = "ARBITER_LIST_SCAN_LIMIT", value_name = "N")]
    pub list_scan_limit: Option<usize>,
    /// Compiled-module cache [default: DATA_DIR/policy-cache].
    #[arg(long, env = "ARBITER_POLICY_CACHE_DIR", value_name = "DIR")]
    pub policy_cache_dir: Option<PathBuf>,
    /// Tenants (comma-separated) whose updates and deletes need an etag.
    #[arg(
        long,
        env = "ARBITER_REQUIRE_PRECONDITIONS",
        value_name = "TENANTS",
        value_delimiter = ','
    )]
    pub require_preconditions: Option<Vec<String>>,
    /// Public base URL of the HTTP API, for problem type URIs.
    #[arg(long, env = "ARBITER_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Storage engine [default: rocksdb].
    #[arg(long, env = "ARBITER_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// etcd client URLs, comma-separated [default: http://127.0.0.1:2379].
    #[arg(
        long,
        env = "ARBITER_ETCD_ENDPOINTS",
        value_name = "URL,...",
        value_delimiter = ','
    )]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Prefix of Arbiter's keys in etcd [default: /arbiter].
    #[arg(long, env = "ARBITER_ETCD_PREFIX", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// How long changes are kept for watch and history [default: 168h].
    #[arg(long, env = "ARBITER_HISTORY_RETENTION", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub history_retention: Option<std::time::Duration>,
    /// How often the statistics of refused requests are written to the
    /// store [default: 10s].
    #[arg(long, env = "ARBITER_STATS_FLUSH_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stats_flush_interval: Option<std::time::Duration>,
    /// TLS certificate chain, PEM (re-read when it changes).
    #[arg(long, env = "ARBITER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (re-read when it changes).
    #[arg(long, env = "ARBITER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA that signs client certificates, PEM: clients must present one.
    #[arg(long, env = "ARBITER_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Requests of one tenant served at once; 0: no limit [default: 256].
    #[arg(long, env = "ARBITER_MAX_INFLIGHT_PER_TENANT", value_name = "N")]
    pub max_inflight_per_tenant: Option<u32>,
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
        if config.stats_flush_interval < std::time::Duration::from_millis(100) {
            anyhow::bail!(
                "stats_flush_interval (--stats-flush-interval) is {:?}; give at least 100ms",
                config.stats_flush_interval
            );
        }
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
            policy_max_timeout_ms,
            policy_max_memory_bytes,
            policy_max_module_bytes,
            policy_concurrency,
            policy_tenant_concurrency,
            policy_slot_wait_ms,
            policy_prepare_ahead,
            list_scan_limit,
            policy_cache_dir,
            require_preconditions,
            public_url,
            store,
            etcd_endpoints,
            etcd_prefix,
            history_retention,
            stats_flush_interval,
            max_inflight_per_tenant,
            tls_cert,
            tls_key,
            tls_client_ca,
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
        if let Some(v) = policy_max_timeout_ms {
            self.policy_max_timeout_ms = v;
        }
        if let Some(v) = policy_max_memory_bytes {
            self.policy_max_memory_bytes = v;
        }
        if let Some(v) = policy_max_module_bytes {
            self.policy_max_module_bytes = v;
        }
        if let Some(v) = policy_concurrency {
            self.policy_concurrency = v;
        }
        if policy_tenant_concurrency.is_some() {
            self.policy_tenant_concurrency = policy_tenant_concurrency;
        }
        if let Some(v) = policy_slot_wait_ms {
            self.policy_slot_wait_ms = v;
        }
        if let Some(v) = policy_prepare_ahead {
            self.policy_prepare_ahead = v;
        }
        if let Some(v) = list_scan_limit {
            self.list_scan_limit = v.max(1);
        }
        if policy_cache_dir.is_some() {
            self.policy_cache_dir = policy_cache_dir;
        }
        if let Some(v) = require_preconditions {
            self.require_preconditions = v;
        }
        if public_url.is_some() {
            self.public_url = public_url;
        }
        if let Some(v) = store {
            self.store = v;
        }
        if let Some(v) = etcd_endpoints {
            self.etcd_endpoints = v;
        }
        if let Some(v) = etcd_prefix {
            self.etcd_prefix = v;
        }
        if let Some(v) = history_retention {
            self.history_retention = v;
        }
        if let Some(v) = stats_flush_interval {
            self.stats_flush_interval = v;
        }
        if let Some(v) = max_inflight_per_tenant {
            self.limits.max_inflight_per_tenant = v;
        }
        if tls_cert.is_some() {
            self.tls_cert = tls_cert;
        }
        if tls_key.is_some() {
            self.tls_key = tls_key;
        }
        if tls_client_ca.is_some() {
            self.tls_client_ca = tls_client_ca;
        }
    }

    /// The TLS files, when TLS is on; errors say which setting is missing.
    pub fn tls(&self) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (None, None) if self.tls_client_ca.is_none() => Ok(None),
            (None, None) => anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key"),
            (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
        }
    }

    /// The quotas, checked.
    pub fn quotas(&self) -> anyhow::Result<arbiter_core::Quotas> {
        arbiter_core::Quotas::new(self.quotas.clone()).map_err(|e| anyhow::anyhow!("invalid config: {e}"))
    }

    /// The request limiter, checked.
    pub fn limiter(&self) -> anyhow::Result<crate::limits::Limiter> {
        crate::limits::Limiter::new(&self.rate_limits, self.limits)
            .map_err(|e| anyhow::anyhow!("invalid config: {e}"))
    }

    /// The engine's policy limits.
    pub fn policy(&self) -> arbiter_core::PolicyConfig {
        let defaults = arbiter_core::PolicyConfig::default();
        let max_timeout = std::time::Duration::from_millis(self.policy_max_timeout_ms);
        PolicyConfig {
            default_timeout: defaults.default_timeout.min(max_timeout),
            max_timeout,
            default_memory_bytes: defaults.default_memory_bytes.min(self.policy_max_memory_bytes),
            max_memory_bytes: self.policy_max_memory_bytes,
            max_module_bytes: usize::try_from(self.policy_max_module_bytes).unwrap_or(usize::MAX),
        }
    }

    /// The policy host's settings.
    pub fn policy_host(&self) -> arbiter_policy::HostConfig {
        arbiter_policy::HostConfig {
            cache_dir: Some(
                self.policy_cache_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("policy-cache")),
            ),
            max_memory_bytes: self.policy_max_memory_bytes,
            max_concurrent: self.policy_concurrency,
            tenant_concurrent: self
                .policy_tenant_concurrency
                .unwrap_or_else(arbiter_policy::default_tenant_concurrency),
            slot_wait: std::time::Duration::from_millis(self.policy_slot_wait_ms),
            prepare_ahead: self.policy_prepare_ahead,
            ..arbiter_policy::HostConfig::default()
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
        assert!(!c.policy_prepare_ahead);
        assert!(!c.policy_host().prepare_ahead);
        assert_eq!(c.store, StoreKind::Rocksdb);
        assert_eq!(c.etcd_prefix, "/arbiter");
        assert_eq!(c.history_retention.as_secs(), 168 * 3600);
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
        c.apply(&ServeArgs {
            policy_prepare_ahead: Some(true),
            ..Default::default()
        });
        assert!(c.policy_host().prepare_ahead);
        let file = Config::from_toml("policy_prepare_ahead = true\n").unwrap_or_default();
        assert!(file.policy_host().prepare_ahead);
    }

    #[test]
    fn the_kubernetes_config_and_tokens_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/overlays/single");
        let config = Config::from_file(&dir.join("config.toml")).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.grpc_addr.to_string(), "0.0.0.0:50051");
        assert_eq!(config.log_format, LogFormat::Json);
        let tokens = config.tokens.unwrap_or_default();
        assert!(tokens.starts_with("/etc/arbiter/tokens"));
        installed_tokens(&dir.join("tokens.toml"));
        let ha = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/overlays/ha");
        let config = Config::from_file(&ha.join("config.toml")).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.store, StoreKind::Etcd);
        assert_eq!(config.etcd_endpoints.len(), 3);
        installed_tokens(&ha.join("tokens.toml"));
    }

    /// A shipped tokens file with the entry the README's install step
    /// appends: it must load.
    fn installed_tokens(path: &Path) {
        let shipped = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        let entry = "[[tokens]]\ntoken_sha256 = \"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"\n\
                     principal = \"platform-admin\"\ntenant = \"*\"\nrole = \"admin\"\n";
        crate::auth::Tokens::parse(&format!("{shipped}{entry}")).unwrap_or_else(|e| panic!("{e:#}"));
    }

    #[test]
    fn the_etcd_settings_parse() {
        let c = Config::from_toml(
            "store = \"etcd\"\netcd_endpoints = [\"http://e1:2379\", \"http://e2:2379\"]\nhistory_retention = \"2h 30m\"\n",
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.store, StoreKind::Etcd);
        assert_eq!(c.etcd_endpoints.len(), 2);
        assert_eq!(c.history_retention.as_secs(), 9000);
        assert!(Config::from_toml("history_retention = \"soon\"").is_err());
    }

    #[test]
    fn quotas_and_rate_limits_parse() {
        let c = Config::from_toml(
            "[[quotas]]\ntenant = \"*\"\ncollection = \"vms\"\nmax = 1000\n\n\
             [[rate_limits]]\ntenant = \"*\"\nprincipal = \"*\"\nrequests_per_second = 200\nburst = 400\n\n\
             [limits]\nmax_inflight_per_tenant = 16\n",
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.quotas().map(|q| q.limit("acme", "vms")).ok(), Some(Some(1000)));
        assert_eq!(c.rate_limits[0].burst, Some(400));
        assert_eq!(c.limits.max_inflight_per_tenant, 16);
        assert!(c.limiter().is_ok());
        let bad = Config::from_toml("[[quotas]]\ntenant = \"*\"\ncollection = \"vm\"\nmax = 1\n")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(format!("{:#}", bad.quotas().unwrap_err()).contains("quotas[0].collection"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml("grpc_adr = \"x\"").is_err());
    }
}
