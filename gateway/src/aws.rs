//! The one HTTP client stack of the gateway's AWS calls (S3 bundle source, Secrets
//! Manager). Imports nothing of this crate.

/// hyper 1 with rustls on ring, the platform's root certificates, pooled connections: the
/// one HTTP client stack of fleetgate's AWS calls.
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}
