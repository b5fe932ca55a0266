//! The operator's configuration: command-line flags, each with an
//! environment-variable fallback so a Deployment can set either.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// Kiln's operator: reconciles kiln.dev resources into pods.
#[derive(Debug, Clone, Parser)]
#[command(name = "kiln-operator", version, about)]
pub struct Config {
    /// Address serving `/metrics` in the Prometheus text format.
    #[arg(
        long,
        env = "KILN_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_bind_address: SocketAddr,

    /// Address serving `/healthz` (liveness) and `/readyz` (readiness).
    #[arg(long, env = "KILN_HEALTH_BIND_ADDRESS", default_value = "0.0.0.0:8081")]
    pub health_bind_address: SocketAddr,

    /// Elect a leader among replicas with a coordination.k8s.io Lease; only the
    /// leader reconciles. Turn off only when a single replica runs.
    #[arg(long, env = "KILN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// The Lease's name.
    #[arg(long, env = "KILN_LEASE_NAME", default_value = "kiln-operator")]
    pub lease_name: String,

    /// The Lease's namespace. Default: the pod's namespace (`POD_NAMESPACE`),
    /// else the kubeconfig's namespace.
    #[arg(long, env = "KILN_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a leader's Lease stays valid without renewal; a new leader takes
    /// over at most this long after the old one dies.
    #[arg(long, env = "KILN_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=300))]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease. Default: the pod's name (`POD_NAME`),
    /// else the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The pod's namespace, from the downward API.
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,

    /// Log line format.
    #[arg(long, env = "KILN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `info,kiln_operator=debug`.
    #[arg(long, env = "KILN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Reconcile resources of this namespace only. Empty: all namespaces.
    #[arg(long, env = "KILN_WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,

    /// The image of `kiln-runtime`: built-in algorithms, and the fetch, push
    /// and checkpoint-sync steps of every training pod.
    #[arg(long, env = "KILN_RUNTIME_IMAGE", default_value = concat!("kiln/runtime:", env!("CARGO_PKG_VERSION")))]
    pub runtime_image: String,

    /// The image holding `kiln-router`, the traffic router in front of every
    /// Endpoint's variants: by default the operator's own image.
    #[arg(long, env = "KILN_ROUTER_IMAGE", default_value = concat!("kiln/operator:", env!("CARGO_PKG_VERSION")))]
    pub router_image: String,

    /// Router replicas of every Endpoint (two survive a node's loss).
    #[arg(long, env = "KILN_ROUTER_REPLICAS", default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub router_replicas: i32,

    /// The cluster's DNS domain, for the search path that makes the hosts
    /// `algo-1..algo-N` of a job resolve.
    #[arg(long, env = "KILN_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// The node label of spot capacity, as `key=value`: spot pods require it
    /// (`capacityType: Spot`) or prefer it (`SpotWithFallback`).
    #[arg(long, env = "KILN_SPOT_NODE_LABEL", default_value = "karpenter.sh/capacity-type=spot", value_parser = parse_key_value)]
    pub spot_node_label: (String, String),

    /// Taints of spot nodes that spot pods tolerate, as `key[=value]:Effect`,
    /// comma-separated. The default covers GKE's and AKS's spot taints.
    #[arg(long, env = "KILN_SPOT_TOLERATIONS", value_delimiter = ',', value_parser = parse_taint, default_value = "cloud.google.com/gke-spot=true:NoSchedule,kubernetes.azure.com/scalesetpriority=spot:NoSchedule")]
    pub spot_tolerations: Vec<Taint>,
}

/// A taint to tolerate: key, optional value, effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// The taint's key.
    pub key: String,
    /// Its value; None tolerates any value.
    pub value: Option<String>,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn parse_taint(s: &str) -> Result<Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not key[=value]:Effect"))?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!(
            "{s:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(format!("{s:?} has no key"));
    }
    Ok(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
    })
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines, for terminals.
    Text,
}

impl Config {
    /// The identity written into the Lease.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("kiln-operator-{}", std::process::id()))
    }

    /// The namespace of the Lease, given the client's default namespace.
    pub fn lease_namespace(&self, client_default: &str) -> String {
        [&self.lease_namespace, &self.pod_namespace]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| client_default.to_string())
    }

    /// The namespace to watch, or None for all.
    pub fn watch_namespace(&self) -> Option<&str> {
        Some(self.watch_namespace.as_str()).filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::try_parse_from(["kiln-operator"]).unwrap();
        assert_eq!(c.metrics_bind_address.port(), 8080);
        assert_eq!(c.health_bind_address.port(), 8081);
        assert!(c.leader_elect);
        assert_eq!(c.lease_name, "kiln-operator");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.watch_namespace(), None);
    }

    #[test]
    fn flags_parse_and_bad_values_are_refused() {
        let c = Config::try_parse_from([
            "kiln-operator",
            "--leader-elect=false",
            "--log-format=text",
            "--watch-namespace=ml",
            "--lease-namespace=kiln-system",
        ])
        .unwrap();
        assert!(!c.leader_elect);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.watch_namespace(), Some("ml"));
        assert_eq!(c.lease_namespace("default"), "kiln-system");
        let err = Config::try_parse_from(["kiln-operator", "--log-format=xml"]).unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
        assert!(Config::try_parse_from(["kiln-operator", "--lease-duration-seconds=1"]).is_err());
        assert!(Config::try_parse_from(["kiln-operator", "--metrics-bind-address=nope"]).is_err());
    }

    #[test]
    fn spot_label_and_taints_parse() {
        let c = Config::try_parse_from(["kiln-operator"]).unwrap();
        assert_eq!(
            c.spot_node_label,
            ("karpenter.sh/capacity-type".into(), "spot".into())
        );
        assert_eq!(c.spot_tolerations.len(), 2);
        assert_eq!(c.spot_tolerations[0].key, "cloud.google.com/gke-spot");
        let c = Config::try_parse_from([
            "kiln-operator",
            "--spot-tolerations=spot:NoExecute,pool=cheap:NoSchedule",
        ])
        .unwrap();
        assert_eq!(
            c.spot_tolerations,
            vec![
                Taint {
                    key: "spot".into(),
                    value: None,
                    effect: "NoExecute".into()
                },
                Taint {
                    key: "pool".into(),
                    value: Some("cheap".into()),
                    effect: "NoSchedule".into()
                },
            ]
        );
        let err = Config::try_parse_from(["kiln-operator", "--spot-tolerations=spot:Sometimes"])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("NoSchedule, PreferNoSchedule or NoExecute"),
            "{err}"
        );
        assert!(Config::try_parse_from(["kiln-operator", "--spot-node-label=novalue"]).is_err());
    }

    #[test]
    fn lease_namespace_falls_back_to_pod_then_client() {
        let mut c = Config::try_parse_from(["kiln-operator"]).unwrap();
        c.lease_namespace = None;
        c.pod_namespace = Some("kiln-system".into());
        assert_eq!(c.lease_namespace("default"), "kiln-system");
        c.pod_namespace = None;
        assert_eq!(c.lease_namespace("default"), "default");
    }
}
