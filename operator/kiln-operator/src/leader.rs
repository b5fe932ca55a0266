//! Leader election on a coordination.k8s.io Lease: of all replicas, only the
//! Lease holder runs the controllers; the others wait, ready to take over.

use std::future::Future;

use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// Where the Lease is and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Seconds the Lease stays valid without renewal.
    pub duration_seconds: u64,
}

impl LeaseConfig {
    /// Renewal starts this many seconds before expiry: a third of the
    /// duration, so two renewals can fail before the Lease lapses.
    fn grace_seconds(&self) -> u64 {
        (self.duration_seconds / 3).max(2)
    }
}

/// Waits for the Lease, runs `work` while holding it, and returns when
/// `shutdown` fires (releasing the Lease) or with an error when the Lease is
/// lost: a replica that lost it must stop reconciling at once, and the
/// process exits so that it restarts as a follower.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    lease: LeaseConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
    work: F,
) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.grace_seconds())
        .with_field_manager("kiln-operator")
        .build()
        .await?;
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "waiting for the leader Lease");
    let (mut is_leader, watcher) = manager.watch().await;

    // Wait until this replica leads or the process is asked to stop.
    loop {
        if *is_leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                drop(is_leader);
                let _ = watcher.await;
                return Ok(());
            }
            changed = is_leader.changed() => {
                changed.map_err(|_| anyhow::anyhow!("leader election stopped unexpectedly"))?;
            }
        }
    }

    tracing::info!(identity = %lease.identity, "became leader");
    tokio::spawn(record_leadership(client, lease.clone()));
    metrics.leader.set(1);
    metrics.leader_acquisitions.inc();
    let work_token = shutdown.child_token();
    let mut work = tokio::spawn(work(work_token.clone()));

    let outcome = loop {
        tokio::select! {
            // Shutdown first: the controllers end on the same signal, and
            // their ending then is expected.
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            changed = is_leader.changed() => {
                if changed.is_err() || !*is_leader.borrow_and_update() {
                    break Err(anyhow::anyhow!("lost the leader Lease {}/{}", lease.namespace, lease.name));
                }
            }
            finished = &mut work => {
                break match finished {
                    Ok(result) if shutdown.is_cancelled() => result,
                    Ok(result) => result.and_then(|()| Err(anyhow::anyhow!("controllers stopped unexpectedly"))),
                    Err(e) => Err(anyhow::anyhow!("controllers panicked: {e}")),
                };
            }
        }
    };

    work_token.cancel();
    if !work.is_finished() {
        let _ = work.await;
    }
    metrics.leader.set(0);
    // Dropping the receiver makes the watcher release the Lease, so a
    // follower takes over at once instead of after the Lease expires.
    drop(is_leader);
    match watcher.await {
        Ok(Ok(_)) => tracing::info!("released the leader Lease"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "releasing the leader Lease failed; it expires by itself")
        }
        Err(e) => tracing::warn!(error = %e, "leader election task failed"),
    }
    outcome
}

/// Records a `LeaderElection` event on the Lease, so `kubectl describe lease`
/// shows who led when. Best effort: a failure is logged, never fatal.
async fn record_leadership(client: Client, lease: LeaseConfig) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let reference = match leases.get(&lease.name).await {
        Ok(object) => object.object_ref(&()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Lease to record the leadership event");
            return;
        }
    };
    let reporter = Reporter {
        controller: "kiln-operator".into(),
        instance: Some(lease.identity.clone()),
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "LeaderElection".into(),
        note: Some(format!("{} became leader", lease.identity)),
        action: "Acquire".into(),
        secondary: None,
    };
    if let Err(e) = Recorder::new(client, reporter)
        .publish(&event, &reference)
        .await
    {
        tracing::warn!(error = %e, "cannot record the leadership event");
    }
}
