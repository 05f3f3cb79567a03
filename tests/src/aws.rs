//! AWS for tests: moto's server (real S3 and STS APIs, many accounts) on a free loopback
//! port, and a small HTTP proxy in front of it that counts requests, injects throttling and
//! 5xx, and can hold pointer writes so two appliers race deterministically.
//!
//! Each test starts its own server and stops it when the [`Moto`] drops. moto runs under a
//! tiny Python watchdog that reads its stdin: if the test process dies without dropping,
//! the pipe closes and the watchdog stops moto, so no server outlives its test.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Starts moto as a child of a watchdog that stops it when our end of the pipe closes.
const WATCHDOG: &str = "import subprocess, sys\n\
p = subprocess.Popen([sys.executable, '-m', 'moto.server', '-H', '127.0.0.1', '-p', sys.argv[1]])\n\
try:\n    sys.stdin.read()\nfinally:\n    p.terminate()\n    p.wait()\n";

/// A moto server on 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    stdin: Option<ChildStdin>,
    pub addr: SocketAddr,
}

impl Moto {
    /// Starts `python3 -m moto.server` with cross-account S3 access refused (so a bucket of
    /// another account is AccessDenied, as in AWS), and waits until it answers.
    pub fn start() -> Moto {
        let port = free_port();
        let python = std::env::var("FLEETGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .args(["-c", WATCHDOG, &port.to_string()])
            .env("MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (moto is installed by scripts/test: pip install 'moto[server]')");
        let stdin = child.stdin.take();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let moto = Moto { child, stdin, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if moto.ready() {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto did not answer on {addr} within 60s; is it installed? (pip install 'moto[server]')"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self) -> bool {
        // Any HTTP answer will do; moto answers only once it has loaded.
        TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            && http_call(self.addr, "GET", "/moto-api/data.json").is_some()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The role of every set of credentials STS has handed out so far, in order (moto's
    /// `/moto-api/data.json`): which roles a command assumed.
    pub fn assumed_roles(&self) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let body = rt.block_on(async {
            let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build_http::<Full<Bytes>>();
            let uri = format!("http://{}/moto-api/data.json", self.addr);
            let resp = client.get(uri.parse().unwrap()).await.unwrap();
            resp.into_body().collect().await.unwrap().to_bytes()
        });
        let data: serde_json::Value = serde_json::from_slice(&body).unwrap();
        data["iam"]["AccessKey"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["role_arn"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets every bucket, object and role: `POST /moto-api/reset`.
    pub fn reset(&self) {
        assert_eq!(
            http_call(self.addr, "POST", "/moto-api/reset"),
            Some(200),
            "moto reset"
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing stdin makes the watchdog stop moto; kill the watchdog if it lingers.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SDK config of the hub as the tests run it: moto's credentials `testing`, us-east-1,
/// `endpoint`, the same HTTP client as fleetgate.
pub async fn hub_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_sdk_s3::config::{Credentials, Region};
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .http_client(fleetgate::target::aws::https_client())
        .load()
        .await
}

/// Credentials of `role` in `account_id`, assumed with the hub's (moto maps them to that
/// account).
pub async fn assume(
    hub: &aws_config::SdkConfig,
    account_id: &str,
    role: &str,
) -> aws_sdk_s3::config::Credentials {
    let c = aws_sdk_sts::Client::new(hub)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account_id}:role/{role}"))
        .role_session_name("fleetgate-test")
        .send()
        .await
        .unwrap()
        .credentials
        .unwrap();
    aws_sdk_s3::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "test",
    )
}

/// An S3 client acting with `creds` in `region` (path-style, as against moto).
pub fn s3_with(
    hub: &aws_config::SdkConfig,
    creds: aws_sdk_s3::config::Credentials,
    region: &str,
) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(hub)
            .region(aws_sdk_s3::config::Region::new(region.to_string()))
            .credentials_provider(creds)
            .force_path_style(true)
            .build(),
    )
}

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One bodiless request with hyper's client; the status, or `None` when nothing answered.
fn http_call(addr: SocketAddr, method: &str, path: &str) -> Option<u16> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
            .await
            .ok()?
            .ok()?;
        Some(resp.status().as_u16())
    })
}

/// What the proxy does besides forwarding.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fail the first attempt of every Nth SDK invocation (0: never), alternating
    /// `503 SlowDown` and `500 InternalError`. Retries of a failed invocation (same
    /// `amz-sdk-invocation-id`) go through, so the SDK's retry converges.
    pub every: usize,
    /// Hold each `PUT .../current.json` until a second one for the same key arrives (or
    /// 20 s pass), then send both: two appliers' compare-and-swaps meet head-on.
    pub pair_pointer_writes: bool,
    /// Requests whose path contains this always get `503 SlowDown` (retries too).
    pub throttle_always: Option<String>,
    /// Requests whose path contains this are never answered.
    pub stall: Option<String>,
    /// PUT requests whose path contains this are never answered (reads go through).
    pub stall_writes: Option<String>,
    /// POST requests (S3's DeleteObjects) whose path contains this are never answered.
    pub stall_posts: Option<String>,
    /// A seeded share of all requests gets a random fault ([`Fault`]).
    pub random: Option<RandomFaults>,
    /// The first attempt of every `PUT .../current.json` reaches moto, but its answer is
    /// lost (the connection hangs): the writer's retry finds its own write there.
    pub lose_pointer_answers: bool,
}

/// Random faults: of every 1,000 requests, about `per_mille` get one, the kind drawn from
/// the same seeded sequence (the same seed, the same schedule for the same request order).
#[derive(Debug, Clone, Copy)]
pub struct RandomFaults {
    pub seed: u64,
    pub per_mille: u64,
}

/// What a faulty network does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Never answered.
    Hang,
    /// The connection is closed without an answer.
    Reset,
    /// `503 SlowDown` (S3) or `400 Throttling` (STS).
    Throttle,
    /// Forwarded to moto, which acts on it, but the answer never comes back.
    LoseAnswer,
}

/// Counters of what went through the proxy.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicUsize,
    /// PUT requests that reached moto (writes).
    pub puts: AtomicUsize,
    /// Requests answered with an injected error.
    pub injected: AtomicUsize,
    /// Random faults by kind: hung, reset, throttled, answer lost.
    pub random: [AtomicUsize; 4],
}

#[derive(Debug, Default)]
struct ProxyState {
    /// Requests seen, for the random schedule.
    seen: AtomicUsize,
    invocations: AtomicUsize,
    failed: Mutex<HashSet<String>>,
    held: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

/// An HTTP proxy on 127.0.0.1 in front of moto, stopped on drop.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Body = BoxBody<Bytes, hyper::Error>;

impl Proxy {
    pub fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener.set_nonblocking(true).expect("nonblocking");
        let stats = Arc::new(Stats::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread_stats = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(serve(listener, upstream, faults, thread_stats, rx));
        });
        Proxy {
            addr,
            stats,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn puts(&self) -> usize {
        self.stats.puts.load(Ordering::SeqCst)
    }

    pub fn injected(&self) -> usize {
        self.stats.injected.load(Ordering::SeqCst)
    }

    /// How many random faults of `kind` were injected.
    pub fn faults(&self, kind: Fault) -> usize {
        self.stats.random[kind as usize].load(Ordering::SeqCst)
    }

    pub fn reset_counts(&self) {
        self.stats.requests.store(0, Ordering::SeqCst);
        self.stats.puts.store(0, Ordering::SeqCst);
        self.stats.injected.store(0, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: Faults,
    stats: Arc<Stats>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let client =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let state = Arc::new(ProxyState::default());
    let faults = Arc::new(faults);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let (client, state, faults, stats) =
            (client.clone(), state.clone(), faults.clone(), stats.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (client, state, faults, stats) =
                    (client.clone(), state.clone(), faults.clone(), stats.clone());
                async move {
                    let fault = draw(&state, &faults, &req);
                    match fault {
                        Some(fault) => inject(fault, req, upstream, &client, &stats).await,
                        None => handle(req, upstream, &client, &state, &faults, &stats).await,
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// SplitMix64: a seeded, well-mixed sequence without a dependency.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Incoming,
>;

/// The fault this request gets, if any.
fn draw(state: &ProxyState, faults: &Faults, req: &Request<Incoming>) -> Option<Fault> {
    if faults.lose_pointer_answers
        && req.method() == hyper::Method::PUT
        && req.uri().path().ends_with("/current.json")
        && let Some(id) = req
            .headers()
            .get("amz-sdk-invocation-id")
            .and_then(|v| v.to_str().ok())
    {
        let mut seen = state.failed.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(format!("lost {id}")) {
            return Some(Fault::LoseAnswer);
        }
    }
    let random = faults.random?;
    let n = state.seen.fetch_add(1, Ordering::SeqCst) as u64;
    let r = mix(random.seed ^ mix(n));
    if r % 1000 >= random.per_mille {
        return None;
    }
    Some(match (r / 1000) % 4 {
        0 => Fault::Hang,
        1 => Fault::Reset,
        2 => Fault::Throttle,
        _ => Fault::LoseAnswer,
    })
}

/// Does `fault` to the request.
async fn inject(
    fault: Fault,
    req: Request<Incoming>,
    upstream: SocketAddr,
    client: &Client,
    stats: &Stats,
) -> Result<Response<Body>, std::io::Error> {
    stats.random[fault as usize].fetch_add(1, Ordering::SeqCst);
    stats.requests.fetch_add(1, Ordering::SeqCst);
    match fault {
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(std::io::Error::other("hung"))
        }
        Fault::Reset => Err(std::io::Error::other("injected reset")),
        Fault::Throttle => Ok(
            if req.uri().path() == "/" && req.method() == hyper::Method::POST {
                full(
                    StatusCode::BAD_REQUEST,
                    "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>",
                )
            } else {
                full(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                )
            },
        ),
        Fault::LoseAnswer => {
            if req.method() == hyper::Method::PUT {
                stats.puts.fetch_add(1, Ordering::SeqCst);
            }
            if let Ok(resp) = forward(req, upstream, client).await {
                let _ = resp.into_body().collect().await;
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(std::io::Error::other("answer lost"))
        }
    }
}

/// Sends the request on to moto, as it came.
async fn forward(
    mut req: Request<Incoming>,
    upstream: SocketAddr,
    client: &Client,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = format!("http://{upstream}{path}")
        .parse()
        .expect("an upstream URI");
    client.request(req).await
}

fn full(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    client: &Client,
    state: &ProxyState,
    faults: &Faults,
    stats: &Stats,
) -> Result<Response<Body>, std::io::Error> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let path_has = |needle: &Option<String>| {
        needle
            .as_deref()
            .is_some_and(|n| req.uri().path().contains(n))
    };
    if path_has(&faults.stall)
        || (req.method() == hyper::Method::PUT && path_has(&faults.stall_writes))
        || (req.method() == hyper::Method::POST && path_has(&faults.stall_posts))
    {
        // Until the proxy shuts down (which drops this task).
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if path_has(&faults.throttle_always) {
        stats.injected.fetch_add(1, Ordering::SeqCst);
        return Ok(full(
            StatusCode::SERVICE_UNAVAILABLE,
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
        ));
    }
    if faults.every > 0
        && let Some(id) = req
            .headers()
            .get("amz-sdk-invocation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    {
        let mut failed = state.failed.lock().unwrap_or_else(|e| e.into_inner());
        if !failed.contains(&id) {
            let n = state.invocations.fetch_add(1, Ordering::SeqCst) + 1;
            if n.is_multiple_of(faults.every) {
                failed.insert(id);
                stats.injected.fetch_add(1, Ordering::SeqCst);
                return Ok(if (n / faults.every).is_multiple_of(2) {
                    full(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "<Error><Code>InternalError</Code><Message>injected by the test proxy</Message></Error>",
                    )
                } else {
                    full(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                    )
                });
            }
        }
    }
    if req.method() == hyper::Method::PUT {
        if faults.pair_pointer_writes && req.uri().path().ends_with("/current.json") {
            let (notify, first) = {
                let mut held = state.held.lock().unwrap_or_else(|e| e.into_inner());
                match held.remove(req.uri().path()) {
                    Some(n) => (n, false),
                    None => {
                        let n = Arc::new(tokio::sync::Notify::new());
                        held.insert(req.uri().path().to_string(), n.clone());
                        (n, true)
                    }
                }
            };
            if first {
                let _ = tokio::time::timeout(Duration::from_secs(20), notify.notified()).await;
            } else {
                notify.notify_one();
            }
        }
        stats.puts.fetch_add(1, Ordering::SeqCst);
    }
    match forward(req, upstream, client).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(_) => Ok(full(
            StatusCode::BAD_GATEWAY,
            "<Error><Code>BadGateway</Code><Message>the proxy could not reach moto</Message></Error>",
        )),
    }
}
