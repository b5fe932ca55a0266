//! The traffic router's configuration: the contract between the operator,
//! which writes it into the `<endpoint>-router` ConfigMap (key
//! [`CONFIG_KEY`]), and `kiln-router`, which reads it from the mounted file
//! and applies a changed file without a restart.
//!
//! Not a custom resource: users never write it. The operator derives it from
//! an Endpoint's spec and its rollout state.

use serde::{Deserialize, Serialize};

/// The ConfigMap key (and file name in the router pod) holding the JSON.
pub const CONFIG_KEY: &str = "router.json";
/// The port the router answers requests on.
pub const HTTP_PORT: u16 = 8080;
/// The port of the router's `/metrics` and `/healthz`.
pub const ADMIN_PORT: u16 = 9090;
/// The request header that pins a request to one variant (SageMaker's
/// `TargetVariant`): Kiln's name.
pub const TARGET_VARIANT_HEADER: &str = "x-kiln-target-variant";
/// SageMaker's name of the same header, accepted too.
pub const SAGEMAKER_TARGET_VARIANT_HEADER: &str = "x-amzn-sagemaker-target-variant";
/// The response header naming the variant that answered (SageMaker's
/// `x-amzn-invoked-production-variant`).
pub const INVOKED_VARIANT_HEADER: &str = "x-amzn-invoked-production-variant";

/// Everything one router process needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouterConfig {
    /// The Endpoint's name: a label of every metric and part of capture paths.
    pub endpoint: String,
    /// The Endpoint's revision this configuration belongs to.
    #[serde(default)]
    pub revision: i64,
    /// Requests taking longer are answered with 504.
    pub request_timeout_seconds: u32,
    /// Production variants: a request goes to one of them, chosen by weight
    /// (or by the target-variant header).
    pub variants: Vec<RoutedVariant>,
    /// Shadow variants: a sampled copy of production requests goes to each;
    /// their answers are captured, never returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<ShadowRoute>,
    /// Where sampled requests and responses are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_capture: Option<CaptureConfig>,
}

/// One production variant as the router sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutedVariant {
    /// The variant's name.
    pub name: String,
    /// Base URL of the variant's serving Service, e.g. `http://ep-a.ns.svc:8080`.
    pub url: String,
    /// Relative share of the traffic; 0 takes none unless targeted by header.
    pub weight: u32,
}

/// One shadow variant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShadowRoute {
    /// The shadow's name.
    pub name: String,
    /// Base URL of the shadow's serving Service.
    pub url: String,
    /// Percent (1-100) of production requests copied to it.
    pub sampling_percent: u32,
}

/// Data capture (SageMaker `DataCaptureConfig`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaptureConfig {
    /// Percent (0-100) of production requests recorded. Shadow answers to a
    /// captured request are always recorded.
    pub sampling_percent: u32,
    /// Storage URI prefix: files land under
    /// `<destination>/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/`.
    pub destination: String,
    /// Record request bodies.
    pub capture_input: bool,
    /// Record response bodies.
    pub capture_output: bool,
    /// A file is written once it holds this many records...
    #[serde(default = "default_batch_records")]
    pub max_batch_records: u32,
    /// ...or this many seconds after its first record.
    #[serde(default = "default_flush_seconds")]
    pub flush_seconds: u32,
}

fn default_batch_records() -> u32 {
    1000
}

fn default_flush_seconds() -> u32 {
    10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults_the_batching() {
        let json = r#"{"endpoint":"ep","requestTimeoutSeconds":60,
            "variants":[{"name":"a","url":"http://ep-a:8080","weight":9}],
            "dataCapture":{"samplingPercent":5,"destination":"s3://b/p","captureInput":true,"captureOutput":false}}"#;
        let config: RouterConfig = serde_json::from_str(json).unwrap();
        let capture = config.data_capture.as_ref().unwrap();
        assert_eq!(
            (capture.max_batch_records, capture.flush_seconds),
            (1000, 10)
        );
        assert_eq!(config.revision, 0);
        assert!(config.shadows.is_empty());
        let again: RouterConfig =
            serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
    }
}
