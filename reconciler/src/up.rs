//! `fleetgate up`: the whole loop on one machine, with no AWS account and no setup.
//!
//! In a work directory (kept between runs):
//!
//! ```text
//! DIR/repo/                 a git repository made from the embedded config-repo-example
//! DIR/fleet/<account>/      the file:// fleet: the accounts' S3 layout on disk
//! DIR/secrets/<account>/    each account's Secrets Manager secrets by name (signing keys,
//!                           client secret hashes), generated on first use; the gateways
//!                           read them with --secrets-dir semantics
//! DIR/credentials/<account>/<client>   plain secrets generated for clients whose hash is
//!                           held by reference (the demo needs to know them)
//! ```
//!
//! It then runs, in this one process: the watch daemon on `DIR/repo` (branch `main`,
//! polling every 2 s, waves and health gates from fleet.yaml with bakes capped), one
//! gateway with its embedded IdP per account on consecutive local ports, and small demo
//! backends standing in for the services (the gateways' backend URLs are replaced by
//! name; nothing else differs from what an account runs). Ctrl-C stops all of it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::Request;
use fleetgate_bundle::Bundle;
use fleetgate_bundle::bundle::{ClientSecret, SecretRef};
use fleetgate_gateway::secrets::{SecretArn, Secrets};
use fleetgate_gateway::source::FileSource;
use fleetgate_gateway::{Gateway, Options};
use serde_json::json;

use crate::config::repo::Repo;
use crate::git::GitRepo;
use crate::target::connect::TargetSpec;

/// Resolves once `rx` says stop.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The servers `up` runs until it stops.
type Tasks = Vec<tokio::task::JoinHandle<Result<()>>>;

/// Demo backends, one per backend name of the fleet; their URLs by name.
async fn start_backends(
    bundles: &BTreeMap<String, Bundle>,
    stop: &tokio::sync::watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Result<BTreeMap<String, String>> {
    let names: BTreeSet<String> = bundles
        .values()
        .flat_map(|b| b.gateway.backends.keys().cloned())
        .collect();
    let mut overrides = BTreeMap::new();
    for name in names {
        let listener = bind(0, "demo backend").await?;
        overrides.insert(name.clone(), format!("http://{}", listener.local_addr()?));
        let server =
            axum::serve(listener, demo_backend(name)).with_graceful_shutdown(stopped(stop.clone()));
        tasks.push(tokio::spawn(async move {
            server.await.map_err(anyhow::Error::from)
        }));
    }
    Ok(overrides)
}

/// One in-process gateway per account, on `at(i)` and its admin on `at(1001 + i)`, each
/// reading its account's pointer in `fleet_dir`; the accounts as the guide shows them.
#[allow(clippy::too_many_arguments)] // the servers' shared settings, one each
async fn start_gateways(
    bundles: &BTreeMap<String, Bundle>,
    dir: &Path,
    fleet_dir: &Path,
    overrides: &BTreeMap<String, String>,
    at: &dyn Fn(u16) -> Result<u16>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Result<(Vec<LocalAccount>, Vec<Arc<Gateway>>)> {
    let mut accounts = Vec::new();
    let mut gateways = Vec::new();
    for (i, (name, bundle)) in bundles.iter().enumerate() {
        let i = u16::try_from(i).context("too many accounts")?;
        let data = bind(at(i)?, &format!("{name}'s gateway")).await?;
        let admin = bind(at(1001 + i)?, &format!("{name}'s gateway admin")).await?;
        let gateway = Arc::new(Gateway::with_options(Options {
            secrets: Arc::new(Secrets::new(Some(dir.join("secrets").join(name)), None)),
            backend_overrides: overrides.clone(),
            ..Options::default()
        }));
        accounts.push(LocalAccount {
            name: name.clone(),
            stage: bundle.account.stage.clone(),
            host: bundle.gateway.hosts.first().cloned().unwrap_or_default(),
            listen: data.local_addr()?,
            admin: admin.local_addr()?,
        });
        gateways.push(gateway.clone());
        let source = FileSource::new(&format!("file://{}", fleet_dir.join(name).display()));
        let server_settings = fleetgate_gateway::server::Settings {
            poll: Duration::from_secs(1),
            status_every: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
            ..fleetgate_gateway::server::Settings::new(format!("up-{name}"))
        };
        let stop = stopped(stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            fleetgate_gateway::server::run(gateway, source, data, admin, server_settings, stop)
                .await
        }));
    }
    Ok((accounts, gateways))
}

/// What `up` is asked to do.
#[derive(Debug, Clone)]
pub struct UpSettings {
    pub dir: PathBuf,
    /// The first account's gateway port; the others follow in account order, the daemon's
    /// /status is at `port + 1000` and the gateways' admin ports after it. 0: any free ports.
    pub port: u16,
    /// Every wave's bake is at most this.
    pub max_bake: Duration,
    /// How often the daemon fetches the repo.
    pub poll: Duration,
    pub cache_dir: PathBuf,
}

/// One account's local gateway.
#[derive(Debug, Clone)]
pub struct LocalAccount {
    pub name: String,
    pub stage: String,
    pub host: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

const BRANCH: &str = "main";

/// Writes the embedded example into `dir` and commits it on `main` (git2).
fn create_repo(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, text) in crate::config::example_fleet::example_files() {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head(BRANCH);
    let repo = git2::Repository::init_opts(dir, &opts)?;
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("fleetgate up", "up@fleetgate.invalid")?;
    repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        "The example fleet (made by fleetgate up)",
        &tree,
        &[],
    )?;
    Ok(())
}

/// The bundles of the branch's head, by account.
fn render_head(repo_dir: &Path, cache_dir: &Path) -> Result<BTreeMap<String, Bundle>> {
    let location = repo_dir.to_string_lossy().to_string();
    let git = GitRepo::open(&location, cache_dir)?;
    let head = git.resolve(&git.branch_rev(BRANCH))?;
    let repo = Repo::load(&git.snapshot(&head)?);
    if !repo.diagnostics.is_empty() {
        let lines: Vec<String> = repo.diagnostics.iter().map(|d| d.to_string()).collect();
        bail!(
            "the repo at {} is not valid:\n{}",
            head.short(),
            lines.join("\n")
        );
    }
    let mut out = BTreeMap::new();
    for name in repo.account_names() {
        match crate::render::render(&repo, name) {
            Ok(r) => {
                out.insert(name.to_string(), r.bundle);
            }
            Err(errs) => {
                let lines: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
                bail!("{name} does not render:\n{}", lines.join("\n"));
            }
        }
    }
    Ok(out)
}

/// Creates the secrets an account's bundle refers to that do not exist yet: signing keys
/// for their algorithm, and for clients whose hash is held by reference a new random secret
/// (its hash under secrets/, the secret itself under credentials/). Returns what it made.
pub fn provision_secrets(dir: &Path, account: &str, bundle: &Bundle) -> Result<Vec<String>> {
    let secrets = dir.join("secrets").join(account);
    let mut made = Vec::new();
    let path_of = |r: &SecretRef| -> Option<PathBuf> {
        match r {
            // Where the gateway's --secrets-dir lookup reads it.
            SecretRef::AwsSecretsManager(arn) => {
                fleetgate_gateway::secrets::dir_path(&secrets, SecretArn::parse(arn)?.name)
            }
            // Files and variables are the operator's: nothing to make.
            SecretRef::File(_) | SecretRef::Env(_) => None,
        }
    };
    let write = |path: &Path, text: &str| -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    if let Some(issuer) = &bundle.idp.issuer {
        for (_, key) in issuer.signing_keys.all() {
            if let Some(path) = path_of(&key.private_key).filter(|p| !p.exists()) {
                let pem = fleetgate_gateway::keys::generate_key(key.algorithm)
                    .map_err(|e| anyhow::anyhow!("{account}: signing key {}: {e}", key.kid))?;
                write(&path, &pem)?;
                made.push(format!("{account}: signing key {}", key.kid));
            }
        }
    }
    for client in &bundle.idp.clients {
        let ClientSecret::Ref(r) = &client.secret else {
            continue;
        };
        if let Some(path) = path_of(r).filter(|p| !p.exists()) {
            let secret = format!("{:016x}{:016x}", random_u64()?, random_u64()?);
            let hash = fleetgate_gateway::idp::hash_secret(&secret)
                .map_err(|e| anyhow::anyhow!("{account}: client {}: {e}", client.id))?;
            write(
                &dir.join("credentials").join(account).join(&client.id),
                &secret,
            )?;
            write(&path, &hash)?;
            made.push(format!("{account}: client {} secret", client.id));
        }
    }
    Ok(made)
}

fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(u64::from_le_bytes(b))
}

/// A demo service: answers every path with what it is and who called (the claims the
/// gateway forwarded), and `/healthz` with ok.
fn demo_backend(name: String) -> axum::Router {
    axum::Router::new().fallback(move |req: Request| {
        let name = name.clone();
        async move {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            };
            if req.uri().path() == "/healthz" {
                return axum::Json(json!({"status": "ok", "service": name}));
            }
            axum::Json(json!({
                "service": name,
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "subject": h("x-fleetgate-subject"),
                "tenant": h("x-fleetgate-tenant"),
                "request_id": h("x-request-id"),
                "note": "a demo backend of fleetgate up",
            }))
        }
    })
}

async fn bind(port: u16, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("cannot listen on 127.0.0.1:{port} ({what}); is another fleetgate up running? Pick other ports with --port")
        })
}

/// Runs the local fleet until `shutdown` resolves. `ready` gets the accounts once every
/// gateway serves the branch's head, and `out` the guide.
pub async fn run(
    settings: UpSettings,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let dir = std::path::absolute(&settings.dir)?;
    let repo_dir = dir.join("repo");
    let fleet_dir = dir.join("fleet");
    if !repo_dir.exists() {
        create_repo(&repo_dir)?;
        writeln!(
            out,
            "Made a git repository of the example fleet in {}",
            repo_dir.display()
        )?;
    }
    std::fs::create_dir_all(&fleet_dir)?;
    let bundles = render_head(&repo_dir, &settings.cache_dir)?;
    for (name, bundle) in &bundles {
        for m in provision_secrets(&dir, name, bundle)? {
            tracing::info!(made = %m, "local secret generated");
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let overrides = start_backends(&bundles, &stop_rx, &mut tasks).await?;

    let at = |offset: u16| {
        if settings.port == 0 {
            Ok(0)
        } else {
            settings
                .port
                .checked_add(offset)
                .context("--port is too high for this many accounts")
        }
    };
    // One gateway per account.
    let (accounts, gateways) = start_gateways(
        &bundles, &dir, &fleet_dir, &overrides, &at, &stop_rx, &mut tasks,
    )
    .await?;

    // The reconciler, as `fleetgate watch` runs it.
    let status_listener = bind(at(1000)?, "the reconciler's /status").await?;
    let status_addr = status_listener.local_addr()?;
    let daemon = crate::daemon::watch::Daemon::new(crate::daemon::watch::Settings {
        repo: repo_dir.to_string_lossy().to_string(),
        branch: BRANCH.into(),
        cache_dir: settings.cache_dir.clone(),
        target: TargetSpec::File(fleet_dir.to_string_lossy().to_string()),
        access: Default::default(),
        poll_interval: settings.poll,
        drift_interval: None,
        shard: None,
        identity: "fleetgate-up".into(),
        lease_ttl: Duration::from_secs(30),
        state_bucket: None,
        webhook_secret: None,
        concurrency: None,
        account_timeout: Duration::from_secs(60),
        max_backoff: Duration::from_secs(30),
        max_bake: Some(settings.max_bake),
    });
    // Not spawned: the daemon holds git handles, which stay on this task.
    let settled = {
        let daemon = daemon.clone();
        move || {
            let s = daemon.status();
            s.last_applied.is_some()
                && s.head.as_ref().map(|h| &h.commit) == s.last_applied.as_ref().map(|a| &a.commit)
        }
    };
    let reconciler = crate::daemon::watch::run(daemon, status_listener, stopped(stop_rx.clone()));

    // New key or client references in later commits get their local secrets too.
    {
        let (dir, repo_dir, cache) = (dir.clone(), repo_dir.clone(), settings.cache_dir.clone());
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                let (dir, repo_dir, cache) = (dir.clone(), repo_dir.clone(), cache.clone());
                let made = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
                    let mut made = Vec::new();
                    for (name, bundle) in render_head(&repo_dir, &cache)? {
                        made.extend(provision_secrets(&dir, &name, &bundle)?);
                    }
                    Ok(made)
                })
                .await?;
                match made {
                    Ok(made) => {
                        for m in made {
                            tracing::info!(made = %m, "local secret generated");
                        }
                    }
                    // An invalid commit: the daemon reports it; nothing to provision.
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "not provisioning secrets")
                    }
                }
            }
        }));
    }

    let flow = async {
        let result = present(
            out,
            &settings,
            &dir,
            &repo_dir,
            &accounts,
            &gateways,
            &settled,
            status_addr,
            shutdown,
        )
        .await;
        let _ = stop_tx.send(true);
        result
    };
    let (reconciled, presented) = tokio::join!(reconciler, flow);
    let mut failed = Vec::new();
    if let Err(e) = presented {
        failed.push(format!("{e:#}"));
    }
    if let Err(e) = reconciled {
        failed.push(format!("the reconciler: {e:#}"));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{e:#}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        bail!("stopped with errors:\n{}", failed.join("\n"));
    }
    writeln!(out, "Stopped.")?;
    Ok(())
}

/// Waits for the first rollout to finish, prints the guide, waits for `shutdown`.
#[allow(clippy::too_many_arguments)]
async fn present(
    out: &mut (dyn Write + Send),
    settings: &UpSettings,
    dir: &Path,
    repo_dir: &Path,
    accounts: &[LocalAccount],
    gateways: &[Arc<Gateway>],
    settled: &dyn Fn() -> bool,
    status_addr: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    writeln!(
        out,
        "Rolling the example fleet out to {} local accounts, wave by wave (bakes capped at {})...",
        accounts.len(),
        humantime::format_duration(settings.max_bake)
    )?;
    out.flush()?;
    // Ready: the whole fleet is at the branch's head and every gateway serves a bundle.
    let ready = async {
        loop {
            if settled() && gateways.iter().all(|g| g.is_ready()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let stopped_early = tokio::select! {
        _ = ready => false,
        _ = &mut shutdown => true,
    };
    if !stopped_early {
        guide(out, dir, repo_dir, accounts, status_addr)?;
        out.flush()?;
        shutdown.await;
    }
    writeln!(out, "Stopping...")?;
    out.flush()?;
    Ok(())
}

/// The account the guide's commands use: acme-prod when there is one.
fn demo_account(accounts: &[LocalAccount]) -> Option<&LocalAccount> {
    accounts
        .iter()
        .find(|a| a.name == "acme-prod")
        .or_else(|| accounts.first())
}

fn guide(
    out: &mut (dyn Write + Send),
    dir: &Path,
    repo_dir: &Path,
    accounts: &[LocalAccount],
    status: SocketAddr,
) -> Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "fleetgate up: {} accounts, each with its gateway and identity provider, reconciled from {} (branch {BRANCH}).",
        accounts.len(),
        repo_dir.display()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  {:<18} {:<8} {:<24} {:<24} host",
        "account", "stage", "gateway", "admin"
    )?;
    for a in accounts {
        writeln!(
            out,
            "  {:<18} {:<8} {:<24} {:<24} {}",
            a.name,
            a.stage,
            format!("http://{}", a.listen),
            format!("http://{}", a.admin),
            a.host
        )?;
    }
    let Some(a) = demo_account(accounts) else {
        return Ok(());
    };
    let gw = format!("http://{}", a.listen);
    writeln!(out)?;
    writeln!(
        out,
        "Get a token from {}'s identity provider (client web-portal; its demo secret is in base/idp.yaml's comment):",
        a.name
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  TOKEN=$(curl -s -u web-portal:demo-web-portal-secret -d grant_type=client_credentials -d scope=orders:read {gw}/oauth2/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')"
    )?;
    writeln!(out)?;
    writeln!(out, "Call an API of {} with it:", a.name)?;
    writeln!(out)?;
    writeln!(
        out,
        "  curl -s -w '\\nHTTP %{{http_code}}\\n' -H 'Host: {}' -H \"Authorization: Bearer $TOKEN\" {gw}/orders",
        a.host
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Change the fleet and watch the change roll out, canary first:"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  cd {} && sed -i 's/requests: 100, per: 1s, burst: 200/requests: 5, per: 1s, burst: 5/' base/gateway.yaml && git commit -qam 'Tighter default rate limit'",
        repo_dir.display()
    )?;
    writeln!(out, "  curl -s http://{status}/status")?;
    writeln!(out)?;
    writeln!(out, "Roll it back by reverting the commit:")?;
    writeln!(out)?;
    writeln!(out, "  git -C {} revert --no-edit HEAD", repo_dir.display())?;
    writeln!(out)?;
    writeln!(
        out,
        "Deployed bundles are under {}/fleet; gateway metrics at <admin>/metrics. Ctrl-C stops everything.",
        dir.display()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_made_once_per_reference_and_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let repo = Repo::load(&crate::config::example_fleet::example_repo());
        let bundle = crate::render::render(&repo, "acme-prod")
            .unwrap_or_else(|_| panic!("renders"))
            .bundle;
        let made =
            provision_secrets(tmp.path(), "acme-prod", &bundle).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            made,
            [
                "acme-prod: signing key idp-2026-09",
                "acme-prod: client reporting-job secret"
            ]
        );
        let key = tmp
            .path()
            .join("secrets/acme-prod/fleetgate/idp/signing-2026-09");
        let pem = std::fs::read_to_string(&key).unwrap_or_else(|e| panic!("{e}"));
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let hash = std::fs::read_to_string(
            tmp.path()
                .join("secrets/acme-prod/fleetgate/clients/reporting-job"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(hash.starts_with("$argon2id$"));
        // A second run keeps what is there.
        assert!(
            provision_secrets(tmp.path(), "acme-prod", &bundle)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_empty()
        );
        assert_eq!(
            std::fs::read_to_string(&key).ok().as_deref(),
            Some(pem.as_str())
        );
    }
}
