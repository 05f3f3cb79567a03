//! How the AWS SDK's errors become a [`TargetError`]'s class: what a fan-out reports for
//! an account (denied, throttled, network, not found...), from the status, the error code
//! and the transport failure.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::target::ErrorClass;

pub(super) fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

pub(super) fn is_no_such_key<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match e {
        SdkError::ServiceError(s) => {
            s.err().code() == Some("NoSuchKey")
                || (status(e) == Some(404) && s.err().code() != Some("NoSuchBucket"))
        }
        _ => false,
    }
}

pub(super) fn is_precondition_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    matches!(status(e), Some(412 | 409))
        || matches!(
            e.code(),
            Some("PreconditionFailed" | "ConditionalRequestConflict")
        )
}

/// Sorts an SDK failure into the classes reports use, with a one-line message (the
/// service's code and message, or the transport error). Messages carry no credentials:
/// the SDK's errors never include them.
pub fn classify<E>(e: &SdkError<E>) -> (ErrorClass, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::TimeoutError(_) => (
            ErrorClass::Timeout,
            "the SDK's operation timeout elapsed".into(),
        ),
        SdkError::DispatchFailure(d) => {
            let class = if d.is_timeout() {
                ErrorClass::Timeout
            } else {
                ErrorClass::Network
            };
            (class, chain(e))
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("");
            let status = s.raw().status().as_u16();
            let class = match code {
                "AccessDenied"
                | "AccessDeniedException"
                | "AllAccessDisabled"
                | "InvalidAccessKeyId"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken" => ErrorClass::AccessDenied,
                "NoSuchBucket" => ErrorClass::BucketMissing,
                "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
                | "RequestThrottled" => ErrorClass::Throttled,
                "PreconditionFailed" | "ConditionalRequestConflict" => ErrorClass::Conflict,
                _ if status == 429 => ErrorClass::Throttled,
                _ if status == 403 => ErrorClass::AccessDenied,
                _ if status >= 500 => ErrorClass::ServerError,
                _ => ErrorClass::Other,
            };
            let message = match (code, s.err().message()) {
                ("", _) => format!("HTTP {status}"),
                (code, Some(m)) if !m.is_empty() => format!("{code} (HTTP {status}): {m}"),
                (code, _) => format!("{code} (HTTP {status})"),
            };
            (class, message)
        }
        SdkError::ResponseError(_) => (
            ErrorClass::Network,
            format!("unreadable response: {}", chain(e)),
        ),
        _ => (ErrorClass::Other, chain(e)),
    }
}

/// An error and its sources, each as it displays itself, joined by `: ` (a source whose
/// text is already said is left out): one readable line, never a debug dump.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_chain_reads_as_one_line_without_repeats_or_debug() {
        let e = E(
            "dispatch failure",
            Some(Box::new(E(
                "io error",
                Some(Box::new(E(
                    "tcp connect error: Connection refused",
                    Some(Box::new(E("Connection refused", None))),
                ))),
            ))),
        );
        assert_eq!(
            chain(&e),
            "dispatch failure: io error: tcp connect error: Connection refused"
        );
    }
}
