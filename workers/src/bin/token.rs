//! Prints a signed JWT for a user and role, for demos, `curl` and `websocat` sessions. Real
//! deployments bring their own tokens; this signs with the same `JWT_SECRET` the gateway checks.

use clap::Parser;
use shared::auth::Role;
use shared::config::JwtConfig;

#[derive(Parser)]
#[command(name = "token", about = "Print a signed JWT for a user")]
struct Config {
    /// The user id (`sub`): [A-Za-z0-9_-]{1,64}.
    #[arg(long)]
    user: String,
    /// seeker or provider.
    #[arg(long)]
    role: String,
    /// Optional display name (`name` claim).
    #[arg(long)]
    name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl_secs: i64,
    #[command(flatten)]
    jwt: JwtConfig,
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let Some(role) = Role::parse(&config.role) else {
        anyhow::bail!("role must be seeker or provider");
    };
    if !shared::auth::is_valid_user_id(&config.user) {
        anyhow::bail!("user must match [A-Za-z0-9_-]{{1,64}}");
    }
    let token = shared::auth::mint(
        &config.jwt.jwt_secret,
        &config.user,
        role,
        config.name.as_deref(),
        config.ttl_secs,
    )?;
    println!("{token}");
    Ok(())
}
