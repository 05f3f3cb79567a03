//! What the AWS SDK did under the hood: how many calls, and how many of their attempts were
//! retries, throttled answers or timeouts, across every account of a run. The SDK retries
//! throttling, 5xx and timed-out attempts by itself (standard strategy, backoff with
//! jitter); these counts make that visible in the reports and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::config::interceptors::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

use crate::target::RequestStats;

/// The counters, shared by every client of one target.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    attempts: AtomicU64,
    throttled: AtomicU64,
    timed_out: AtomicU64,
}

impl Counters {
    pub(crate) fn stats(&self) -> RequestStats {
        let calls = self.calls.load(Ordering::Relaxed);
        RequestStats {
            calls,
            retries: self.attempts.load(Ordering::Relaxed).saturating_sub(calls),
            throttled: self.throttled.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// The interceptor every S3 and STS client of a target carries.
#[derive(Debug, Clone)]
pub(crate) struct Counting(pub(crate) Arc<Counters>);

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "fleetgate-request-counts"
    }

    fn read_before_execution(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(response) = context.response() {
            let status = response.status().as_u16();
            // S3 says SlowDown with 503, STS Throttling with 400 and the code in the body.
            let body = response.body().bytes().unwrap_or_default();
            if status == 429 || status == 503 || (status == 400 && contains(body, b"Throttl")) {
                self.0.throttled.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(Err(e)) = context.output_or_error()
            && e.is_timeout_error()
        {
            self.0.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
