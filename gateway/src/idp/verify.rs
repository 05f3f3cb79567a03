//! argon2 verification of client secrets: a client's hash ready to verify ([`PhcHash`], read
//! with the bundle crate's PHC parser), the fixed pool of worker threads fed by a bounded
//! queue ([`Verifier`]), and hashing a new secret ([`hash_secret`]).
//!
//! Imports [`super`]'s OAuth error only.

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use fleetgate_bundle::idp::{Argon2Algorithm, Argon2Cost, Argon2Phc};
use fleetgate_bundle::sensitive::Sensitive;
use http::StatusCode;

use super::OAuthError;

/// How long a token request waits for an argon2 worker before it is answered 503.
pub(super) const VERIFY_WAIT: Duration = Duration::from_secs(2);
/// Verifications queued per worker thread; beyond, requests are answered 503 at once.
const QUEUE_PER_WORKER: usize = 4;

/// A parsed argon2 PHC hash, ready to verify on an argon2 worker. No `Debug` or `Display`
/// shows the salt or the hash.
pub struct PhcHash {
    pub(super) cost: Argon2Cost,
    pub(super) algorithm: argon2::Algorithm,
    pub(super) version: argon2::Version,
    pub(super) params: argon2::Params,
    pub(super) salt: Vec<u8>,
    pub(super) hash: argon2::password_hash::Output,
}

impl std::fmt::Debug for PhcHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhcHash")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl PhcHash {
    /// Reads a PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) whose costs are
    /// within the caps ([`Argon2Phc::parse`], the check `compile()` makes). Errors never
    /// quote the value.
    pub fn parse(phc: &str) -> Result<PhcHash, String> {
        let Argon2Phc {
            cost,
            keyid,
            data,
            salt,
            hash,
        } = Argon2Phc::parse(phc)?;
        let invalid = |_| "the argon2 hash's parameters are not valid".to_string();
        let mut builder = argon2::ParamsBuilder::new();
        builder
            .m_cost(cost.m_cost)
            .t_cost(cost.t_cost)
            .p_cost(cost.p_cost)
            .output_len(cost.output_len);
        if !keyid.is_empty() {
            builder.keyid(argon2::KeyId::new(&keyid).map_err(invalid)?);
        }
        if !data.is_empty() {
            builder.data(argon2::AssociatedData::new(&data).map_err(invalid)?);
        }
        let params = builder.build().map_err(invalid)?;
        Ok(PhcHash {
            cost,
            algorithm: argon2_algorithm(cost.algorithm),
            version: argon2::Version::try_from(cost.version).map_err(invalid)?,
            params,
            salt,
            hash,
        })
    }

    pub fn cost(&self) -> Argon2Cost {
        self.cost
    }

    /// A hash no secret matches (its output is zeros, not an argon2 output) whose
    /// verification costs what one of `like` does: the same parameters and salt length.
    /// Unknown client ids are verified against it.
    pub fn dummy(like: &PhcHash) -> PhcHash {
        let salt: Vec<u8> = b"fleetgate-no-such-client-salt-for-the-dummy-hash-of-an-idp-64by"
            .iter()
            .copied()
            .cycle()
            .take(like.salt.len())
            .collect();
        PhcHash {
            cost: like.cost,
            algorithm: like.algorithm,
            version: like.version,
            params: like.params.clone(),
            salt,
            hash: argon2::password_hash::Output::new(&vec![0u8; like.cost.output_len])
                .unwrap_or(like.hash),
        }
    }

    /// The dummy of an IdP without any usable client hash: argon2's default parameters,
    /// as `fleetgate up` hashes secrets.
    pub(super) fn default_dummy() -> PhcHash {
        let params = argon2::Params::default();
        let output_len = params
            .output_len()
            .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN);
        let model = PhcHash {
            cost: Argon2Cost {
                algorithm: Argon2Algorithm::default(),
                version: u32::from(argon2::Version::default()),
                m_cost: params.m_cost(),
                t_cost: params.t_cost(),
                p_cost: params.p_cost(),
                output_len,
            },
            algorithm: argon2::Algorithm::default(),
            version: argon2::Version::default(),
            params,
            salt: vec![0; 16],
            hash: argon2::password_hash::Output::new(&vec![0u8; output_len])
                .unwrap_or_else(|_| unreachable!("argon2's default output length is valid")),
        };
        PhcHash::dummy(&model)
    }

    /// Whether `secret` hashes to this hash's output (compared in constant time), with
    /// `memory` as argon2's working memory (resized to the parameters when they differ).
    pub(super) fn verify_with(&self, secret: &[u8], memory: &mut Vec<argon2::Block>) -> bool {
        let blocks = self.params.block_count();
        if memory.len() != blocks {
            // A new buffer, not a resize: the old one goes back to the allocator whole.
            *memory = vec![argon2::Block::default(); blocks];
        }
        let argon = argon2::Argon2::new(self.algorithm, self.version, self.params.clone());
        let mut out = vec![0u8; self.cost.output_len];
        if argon
            .hash_password_into_with_memory(secret, &self.salt, &mut out, &mut memory[..])
            .is_err()
        {
            return false;
        }
        // Output's equality is constant-time.
        argon2::password_hash::Output::new(&out).is_ok_and(|o| o == self.hash)
    }
}

/// The argon2 crate's name for `a`.
fn argon2_algorithm(a: Argon2Algorithm) -> argon2::Algorithm {
    match a {
        Argon2Algorithm::Argon2d => argon2::Algorithm::Argon2d,
        Argon2Algorithm::Argon2i => argon2::Algorithm::Argon2i,
        Argon2Algorithm::Argon2id => argon2::Algorithm::Argon2id,
    }
}

/// One verification for an argon2 worker.
pub(super) struct Job {
    hash: Arc<PhcHash>,
    secret: Sensitive<String>,
    /// Not started after this: its request has been answered 503.
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// What the token endpoint shares across bundles: a fixed pool of argon2 worker threads
/// (one per core) fed by a bounded queue. Each worker reuses one working-memory buffer, so
/// argon2's memory is at most workers × the hashes' `m`, whatever the load; a request that
/// finds the queue full, or waits for a worker longer than a bound, is answered 503.
#[derive(Debug)]
pub struct Verifier {
    pub(super) jobs: mpsc::SyncSender<Job>,
    pub(super) workers: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Verifier::new(n, n * QUEUE_PER_WORKER)
    }
}

impl Verifier {
    /// `workers` threads, at most `queue` verifications waiting for one. The threads end
    /// when the verifier is dropped.
    pub fn new(workers: usize, queue: usize) -> Verifier {
        let (jobs, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            match std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || argon2_worker(&rx))
            {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::error!(error = %e, "an argon2 worker thread could not be started")
                }
            }
        }
        Verifier {
            jobs,
            workers: started,
        }
    }

    /// How many worker threads verify.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether `secret` matches `hash`, on a worker.
    pub(super) async fn verify(
        &self,
        hash: Arc<PhcHash>,
        secret: Sensitive<String>,
    ) -> Result<bool, OAuthError> {
        let busy = || {
            OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the token endpoint is busy; retry shortly",
            )
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .try_send(Job {
                hash,
                secret,
                deadline: Instant::now() + VERIFY_WAIT,
                reply,
            })
            .map_err(|_| busy())?;
        match tokio::time::timeout(VERIFY_WAIT, answer).await {
            Ok(Ok(matched)) => Ok(matched),
            _ => Err(busy()),
        }
    }
}

fn argon2_worker(jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory: Vec<argon2::Block> = Vec::new();
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else {
            // The verifier is gone.
            return;
        };
        if job.reply.is_closed() || Instant::now() > job.deadline {
            continue;
        }
        let matched = job
            .hash
            .verify_with(job.secret.expose().as_bytes(), &mut memory);
        let _ = job.reply.send(matched);
    }
}

/// The argon2id PHC hash of `secret` with argon2's default parameters and a random salt.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    use argon2::PasswordHasher as _;
    let salt = argon2::password_hash::SaltString::generate(&mut rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}
