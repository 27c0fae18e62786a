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
    #[arg(long, env = "JWT_SECRET", default_value = "dev-secret-change-me")]
    pub jwt_secret: String,
}

#[derive(Args, Clone, Debug)]
pub struct WorkerConfig {
    /// Frames this instance handles at once (frames of one session stay in order).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 8)]
    pub worker_concurrency: usize,
}
