//! Configuration shared by the binaries, read from the environment (or flags) with defaults that
//! work on one machine. Each binary flattens the groups it needs, so `--help` lists every knob.

use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct NatsConfig {
    /// NATS server (>= 2.11, JetStream enabled).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

#[derive(Args, Clone, Debug)]
pub struct DatabaseConfig {
    /// PostgreSQL (>= 15), schema migrated by `scripts/stack.sh` (or `provision`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/marketplace"
    )]
    pub database_url: String,
    /// Connections in this process's pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: u32,
}

#[derive(Args, Clone, Debug)]
pub struct JwtConfig {
    /// HS256 secret the tokens are signed with.
    #[arg(long, env = "JWT_SECRET", default_value = DEFAULT_JWT_SECRET)]
    pub jwt_secret: String,
}

/// The secret a development stack runs with; refused outside development mode.
pub const DEFAULT_JWT_SECRET: &str = "dev-secret-change-me";
/// The shortest secret accepted outside development mode (HS256 wants at least its hash size).
pub const JWT_SECRET_MIN_BYTES: usize = 32;

impl JwtConfig {
    /// Why this secret must not sign real users' tokens, if it must not.
    pub fn weakness(&self) -> Option<String> {
        if self.jwt_secret == DEFAULT_JWT_SECRET {
            Some(String::from(
                "JWT_SECRET is the built-in development default",
            ))
        } else if self.jwt_secret.len() < JWT_SECRET_MIN_BYTES {
            Some(format!(
                "JWT_SECRET is {} bytes; at least {JWT_SECRET_MIN_BYTES} are needed",
                self.jwt_secret.len()
            ))
        } else {
            None
        }
    }
}

/// The JetStream worker runtime's knobs (lifecycle, mediums, chat).
#[derive(Args, Clone, Debug)]
pub struct WorkerConfig {
    /// Attempts at a frame that fails for a reason other than its content before it goes to the
    /// DEAD_LETTER stream and the sender hears "could not be processed".
    #[arg(long, env = "WORKER_MAX_DELIVER", default_value_t = 10)]
    pub worker_max_deliver: u32,
    /// Frames applied in one transaction, at most (from one partition, or from several).
    #[arg(long, env = "WORKER_BATCH_MAX", default_value_t = 256)]
    pub worker_batch_max: usize,
    /// Transactions this instance keeps in flight at once; the partitions' ready frames are
    /// gathered into them (group commit). One is best on a small machine: while it commits, the
    /// next batch gathers, and fewer, larger transactions cost Postgres less per message.
    #[arg(long, env = "WORKER_COMMIT_CONCURRENCY", default_value_t = 1)]
    pub worker_commit_concurrency: usize,
    /// Postgres connections of the frame runtime alone, besides `DATABASE_POOL_SIZE` (REST calls
    /// and connection notices): those can never take the runtime's.
    #[arg(long, env = "WORKER_RUNTIME_POOL_SIZE", default_value_t = 4)]
    pub worker_runtime_pool_size: u32,
    /// The first retry of a failed frame waits this long; each next one twice as long (up to 5 s).
    #[arg(long, env = "WORKER_RETRY_BACKOFF_MS", default_value_t = 100)]
    pub worker_retry_backoff_ms: u64,
}

/// Where a worker serves its Prometheus metrics.
#[derive(Args, Clone, Debug)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at http://<this address>/metrics, e.g. 127.0.0.1:9101 (off when
    /// empty: each instance needs its own port).
    #[arg(long, env = "METRICS_ADDR", default_value = "")]
    pub metrics_addr: String,
}
