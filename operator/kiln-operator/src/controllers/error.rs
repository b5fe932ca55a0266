//! The one error type of the controllers. A variant says whether the next
//! reconcile can fix it (transient: requeue with backoff) or only a change of
//! the spec can (permanent: a `Failed` condition, wait for a change), and
//! names itself for metrics and Events.

/// What went wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed; retried with backoff.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The API server refused a child the spec describes (admission,
    /// PodSecurity, a quota): the message is the API server's own.
    #[error("{0}")]
    ChildRefused(String),
    /// The object lacks what the API server always sets (a namespace, a UID).
    #[error("{0}")]
    Incomplete(&'static str),
    /// Optimistic-concurrency writes kept meeting newer ones (a version
    /// counter written by others in between); retried with backoff.
    #[error("{0}")]
    Conflict(String),
}

impl Error {
    /// The `reason` label of the error metric and the Event's reason.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::ChildRefused(_) => "ChildRefused",
            Error::Incomplete(_) => "Incomplete",
            Error::Conflict(_) => "Conflict",
        }
    }

    /// Whether retrying the same spec can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Kube(_) | Error::Conflict(_))
    }

    /// Sorts an API error on creating a child: a refusal of the object itself
    /// (bad request, invalid, denied by admission or PodSecurity) is
    /// permanent; the operator's own missing permission or a server problem
    /// is transient.
    pub fn from_child_error(what: &str, e: kube::Error) -> Self {
        if let kube::Error::Api(status) = &e {
            let refused = match status.code {
                400 | 422 => true,
                403 => !status.message.contains("cannot create resource"),
                _ => false,
            };
            if refused {
                return Error::ChildRefused(format!(
                    "the API server refused {what}: {}",
                    status.message
                ));
            }
        }
        Error::Kube(e)
    }
}

/// Result with the controllers' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure(message, "Forbidden").with_code(code),
        ))
    }

    #[test]
    fn refusals_of_the_child_are_permanent_and_missing_rights_are_not() {
        let e = Error::from_child_error(
            "pod x",
            api(
                403,
                "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\"",
            ),
        );
        assert!(!e.is_transient());
        assert!(e.to_string().contains("violates PodSecurity"), "{e}");
        let e = Error::from_child_error(
            "pod x",
            api(
                403,
                "pods is forbidden: User \"system:serviceaccount:kiln:kiln\" cannot create resource \"pods\"",
            ),
        );
        assert!(e.is_transient());
        assert!(
            !Error::from_child_error("pod x", api(422, "spec.containers: Invalid value"))
                .is_transient()
        );
        assert!(
            Error::from_child_error("pod x", api(500, "etcdserver: leader changed")).is_transient()
        );
        assert_eq!(
            Error::from_child_error("pod x", api(409, "conflict")).metric_label(),
            "KubernetesApiError"
        );
    }
}
