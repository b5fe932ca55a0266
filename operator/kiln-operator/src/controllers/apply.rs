//! The API calls every controller makes the same way: server-side apply of a
//! child under the controller's field manager, status written with
//! server-side apply when it changed, and Events on the reconciled object.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};

use super::Context;
use super::error::{Error, Result};

/// Server-side apply of a child under `manager`; a refusal of the child
/// itself is permanent (see [`Error::from_child_error`]).
pub async fn apply<K>(api: &Api<K>, child: &K, manager: &str) -> Result<K>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = child.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(child).expect("a child serializes");
    value["apiVersion"] = K::api_version(&K::DynamicType::default()).into();
    value["kind"] = K::kind(&K::DynamicType::default()).into();
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|e| {
        Error::from_child_error(
            &format!("{} {name}", K::kind(&K::DynamicType::default())),
            e,
        )
    })
}

/// Writes `new` as the object's status with server-side apply under
/// `manager`, when it differs from `old`.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: &S,
    new: &S,
    manager: &str,
) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
    S: PartialEq + serde::Serialize,
{
    if old == new {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&K::DynamicType::default()),
        "kind": K::kind(&K::DynamicType::default()),
        "status": new,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Publishes an Event on `object`; a failure to publish is logged, never fatal.
pub async fn publish<K>(ctx: &Context, object: &K, type_: EventType, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
}
