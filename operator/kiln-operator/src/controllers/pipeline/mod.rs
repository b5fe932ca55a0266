//! The Pipeline controller: check -> schedule -> prune -> summarize.
//!
//! Check: the step graph (unknown names, malformed references, cycles) and
//! the parameters' defaults; `Ready` says whether runs can start, with what
//! to fix. Schedule (CronJob's model): at each tick of `schedule.cron`, read
//! in `schedule.timeZone`, a PipelineRun `<pipeline>-<minutes since the
//! epoch>` is created; the name is the tick's, so a restarted operator (or
//! two reconciles of one tick) never starts a tick twice, and a tick missed
//! while the operator was down starts late unless `startingDeadlineSeconds`
//! passed. `concurrencyPolicy`: Forbid skips a tick while a run is active,
//! Replace stops the active runs first, Allow starts another.
//! Prune: finished scheduled runs beyond the history limits are deleted
//! (with their children). Summarize: active runs, last schedule and last
//! success.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kiln_api::common::ChildReference;
use kiln_api::conditions::{self, reasons, types};
use kiln_api::pipeline::{ConcurrencyPolicy, Pipeline, PipelineSpec, Schedule};
use kiln_api::pipeline_run::{PipelineRun, RunState};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::Context;
use super::apply::{publish, write_status};
use super::error::{Error, Result};
use super::pipeline_run::graph;

/// The label of runs the schedule created: the Pipeline's name.
pub const SCHEDULED_LABEL: &str = "kiln.dev/scheduled-by";
/// The annotation with the tick a scheduled run belongs to (RFC 3339).
pub const TICK_ANNOTATION: &str = "kiln.dev/scheduled-at";
const STATUS_MANAGER: &str = "kiln-operator/pipeline";

/// Whether `spec` can run: its graph and its parameters' defaults.
pub fn check(spec: &PipelineSpec) -> std::result::Result<(), String> {
    graph::graph(spec)?;
    for p in &spec.parameters {
        if p.default.is_some() {
            let mut only = spec.clone();
            only.parameters.retain(|q| q.name == p.name);
            graph::parameters(&only, &[])?;
        }
    }
    if let Some(s) = &spec.schedule {
        parse_schedule(s)?;
        if spec.parameters.iter().any(|p| p.default.is_none()) {
            let missing: Vec<&str> = spec
                .parameters
                .iter()
                .filter(|p| p.default.is_none())
                .map(|p| p.name.as_str())
                .collect();
            return Err(format!(
                "a scheduled pipeline's parameters need defaults (the schedule sets none): {}",
                missing.join(", ")
            ));
        }
    }
    Ok(())
}

/// The schedule's cron pattern and time zone.
pub fn parse_schedule(s: &Schedule) -> std::result::Result<(croner::Cron, chrono_tz::Tz), String> {
    let cron =
        croner::Cron::from_str(&s.cron).map_err(|e| format!("schedule.cron {:?}: {e}", s.cron))?;
    // The operator's "Local" is its container's zone, which is UTC.
    let zone = if s.time_zone == "Local" {
        "UTC"
    } else {
        s.time_zone.as_str()
    };
    let tz = chrono_tz::Tz::from_str(zone).map_err(|_| {
        format!(
            "schedule.timeZone {:?} is not an IANA time zone",
            s.time_zone
        )
    })?;
    Ok((cron, tz))
}

/// What the schedule says at `now`, given the last tick that created a run
/// (or the Pipeline's creation).
#[derive(Debug, PartialEq)]
pub struct Due {
    /// The newest tick in (since, now], if any.
    pub tick: Option<i64>,
    /// The next tick after now, in seconds since the epoch.
    pub next: Option<i64>,
}

/// The ticks around `now` (seconds since the epoch).
pub fn due(cron: &croner::Cron, tz: chrono_tz::Tz, since: i64, now: i64) -> Due {
    let at = |t: i64| tz.timestamp_opt(t, 0).single();
    let tick = at(now)
        .and_then(|n| cron.find_previous_occurrence(&n, true).ok())
        .map(|t| t.timestamp())
        .filter(|t| *t > since);
    let next = at(now)
        .and_then(|n| cron.find_next_occurrence(&n, false).ok())
        .map(|t| t.timestamp());
    Due { tick, next }
}

/// The name of the run of a tick.
pub fn run_name(pipeline: &str, tick: i64) -> String {
    format!("{pipeline}-{}", tick / 60)
}

/// One reconcile of a Pipeline.
pub async fn reconcile(pipeline: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::Incomplete("a Pipeline without a namespace"))?;
    let name = pipeline.name_any();
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let runs_api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(current) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if current.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let generation = current.metadata.generation;
    let now = Timestamp::now();
    let old = current.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    let checked = check(&current.spec);
    let ready = match &checked {
        Ok(()) => conditions::condition(
            types::READY,
            true,
            "Valid",
            "the steps and parameters are valid",
            generation,
            Time(now),
        ),
        Err(m) => conditions::condition(
            types::READY,
            false,
            reasons::INVALID_SPEC,
            m.clone(),
            generation,
            Time(now),
        ),
    };
    let became_invalid = checked.is_err()
        && conditions::find(&old.conditions, types::READY)
            .is_none_or(|c| c.status != "False" || c.message != ready.message);
    conditions::set_condition(&mut status.conditions, ready.clone());

    let mut runs: Vec<PipelineRun> = runs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.spec.pipeline_ref.name == name)
        .collect();
    runs.sort_by_key(|r| {
        r.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0)
    });
    let finished = |r: &PipelineRun| {
        matches!(
            r.status.as_ref().and_then(|s| s.state),
            Some(RunState::Succeeded | RunState::Failed | RunState::Stopped)
        )
    };
    let active: Vec<&PipelineRun> = runs.iter().filter(|r| !finished(r)).collect();
    let mut events: Vec<(EventType, &'static str, String)> = Vec::new();
    if became_invalid {
        events.push((
            EventType::Warning,
            reasons::INVALID_SPEC,
            ready.message.clone(),
        ));
    }

    let mut wait = Duration::from_secs(300);
    if let (Some(schedule), Ok(())) = (&current.spec.schedule, &checked)
        && !schedule.suspend
        && let Ok((cron, tz)) = parse_schedule(schedule)
    {
        let since = status
            .last_schedule_time
            .as_ref()
            .or(current.metadata.creation_timestamp.as_ref())
            .map(|t| t.0.as_second())
            .unwrap_or(now.as_second());
        let d = due(&cron, tz, since, now.as_second());
        if let Some(tick) = d.tick {
            let late = now.as_second() - tick;
            let run = run_name(&name, tick);
            let already = runs.iter().any(|r| r.name_any() == run);
            if already {
                status.last_schedule_time = Some(Time(Timestamp::from_second(tick).unwrap_or(now)));
            } else if schedule
                .starting_deadline_seconds
                .is_some_and(|dl| late > dl)
            {
                events.push((EventType::Warning, "MissedSchedule", format!(
                    "the tick at {} passed {late} s ago, beyond startingDeadlineSeconds; it is skipped",
                    Timestamp::from_second(tick).unwrap_or(now)
                )));
                status.last_schedule_time = Some(Time(Timestamp::from_second(tick).unwrap_or(now)));
            } else if schedule.concurrency_policy == ConcurrencyPolicy::Forbid && !active.is_empty()
            {
                // Tried again when the active run ends (it wakes the Pipeline).
                let names: Vec<String> = active.iter().map(|r| r.name_any()).collect();
                tracing::debug!(pipeline = %name, active = ?names, "a tick waits for the active run (concurrencyPolicy Forbid)");
            } else {
                if schedule.concurrency_policy == ConcurrencyPolicy::Replace {
                    for r in &active {
                        let patch = serde_json::json!({"spec": {"stop": true}});
                        runs_api
                            .patch(
                                &r.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await?;
                        events.push((
                            EventType::Normal,
                            "RunReplaced",
                            format!("run {} stopped for the tick's new run", r.name_any()),
                        ));
                    }
                }
                let created = create_run(&runs_api, &current, &run, tick).await?;
                if created {
                    events.push((
                        EventType::Normal,
                        "RunScheduled",
                        format!(
                            "run {run} for the tick at {}",
                            Timestamp::from_second(tick).unwrap_or(now)
                        ),
                    ));
                }
                status.last_schedule_time = Some(Time(Timestamp::from_second(tick).unwrap_or(now)));
            }
        }
        if let Some(next) = d.next {
            wait = Duration::from_secs((next - now.as_second()).clamp(1, 300) as u64);
        }
    }

    // History: finished runs the schedule created, beyond the limits.
    let scheduled_done: Vec<&PipelineRun> = runs
        .iter()
        .filter(|r| r.labels().get(SCHEDULED_LABEL) == Some(&name) && finished(r))
        .collect();
    for (state, limit) in [
        (
            RunState::Succeeded,
            current.spec.successful_runs_history_limit,
        ),
        (RunState::Failed, current.spec.failed_runs_history_limit),
    ] {
        let of: Vec<&&PipelineRun> = scheduled_done
            .iter()
            .filter(|r| {
                let s = r.status.as_ref().and_then(|s| s.state);
                if state == RunState::Failed {
                    matches!(s, Some(RunState::Failed | RunState::Stopped))
                } else {
                    s == Some(state)
                }
            })
            .collect();
        let excess = of.len().saturating_sub(limit.max(0) as usize);
        for r in of.into_iter().take(excess) {
            match runs_api
                .delete(&r.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    status.active = active
        .iter()
        .take(100)
        .map(|r| ChildReference {
            api_version: PipelineRun::api_version(&()).into(),
            kind: PipelineRun::kind(&()).into(),
            name: r.name_any(),
            uid: r.uid(),
        })
        .collect();
    status.last_successful_time = runs
        .iter()
        .filter(|r| r.status.as_ref().and_then(|s| s.state) == Some(RunState::Succeeded))
        .filter_map(|r| r.status.as_ref().and_then(|s| s.completion_time.clone()))
        .max_by_key(|t| t.0.as_second())
        .or(status.last_successful_time);
    // The condition's time changes only with its status (set_condition).
    write_status(&api, &name, &old, &status, STATUS_MANAGER).await?;
    for (t, reason, note) in events {
        publish(&ctx, &current, t, reason, &note).await;
    }
    Ok(Action::requeue(wait))
}

/// Creates the run of a tick; false when it exists already.
async fn create_run(
    api: &Api<PipelineRun>,
    pipeline: &Pipeline,
    name: &str,
    tick: i64,
) -> Result<bool> {
    let run: PipelineRun = serde_json::from_value(serde_json::json!({
        "apiVersion": PipelineRun::api_version(&()),
        "kind": PipelineRun::kind(&()),
        "metadata": {
            "name": name,
            "labels": {SCHEDULED_LABEL: pipeline.name_any()},
            "annotations": {TICK_ANNOTATION: Timestamp::from_second(tick).map(|t| t.to_string()).unwrap_or_default()},
            "ownerReferences": [{
                "apiVersion": Pipeline::api_version(&()), "kind": Pipeline::kind(&()),
                "name": pipeline.name_any(), "uid": pipeline.uid().unwrap_or_default(),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {"pipelineRef": {"name": pipeline.name_any()}},
    }))
    .map_err(|_| Error::Incomplete("a scheduled PipelineRun"))?;
    match api.create(&PostParams::default(), &run).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::from_child_error(&format!("PipelineRun {name}"), e)),
    }
}

/// The Pipeline a run belongs to, for the run's changes to wake it.
pub fn pipeline_of(run: &PipelineRun) -> Option<ObjectRef<Pipeline>> {
    Some(ObjectRef::new(&run.spec.pipeline_ref.name).within(&run.namespace()?))
}

/// What a failed reconcile does next.
pub fn error_policy(p: Arc<Pipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy("Pipeline", p.as_ref(), error, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, tz: &str) -> Schedule {
        serde_json::from_value(serde_json::json!({"cron": cron, "timeZone": tz})).unwrap()
    }

    #[test]
    fn ticks_are_read_in_the_time_zone() {
        // 2026-01-05 is a Monday; 03:00 in Berlin (UTC+1 in winter) is 02:00 UTC.
        let (cron, tz) = parse_schedule(&schedule("0 3 * * *", "Europe/Berlin")).unwrap();
        let monday_0230_utc = 1_767_580_200; // 2026-01-05T02:30:00Z
        let d = due(&cron, tz, 0, monday_0230_utc);
        assert_eq!(d.tick, Some(1_767_578_400), "02:00 UTC of the same day");
        assert_eq!(d.next, Some(1_767_578_400 + 86_400));
        // Since that tick: nothing is due until the next one.
        assert_eq!(due(&cron, tz, 1_767_578_400, monday_0230_utc).tick, None);
    }

    #[test]
    fn every_minute_and_nicknames() {
        let (cron, tz) = parse_schedule(&schedule("* * * * *", "UTC")).unwrap();
        let d = due(&cron, tz, 1_000_000_020, 1_000_000_090);
        assert_eq!(d.tick, Some(1_000_000_080));
        assert_eq!(d.next, Some(1_000_000_140));
        assert!(parse_schedule(&schedule("@daily", "UTC")).is_ok());
        assert!(
            parse_schedule(&schedule("0 3 * * *", "Mars/Olympus"))
                .unwrap_err()
                .contains("time zone")
        );
        assert_eq!(run_name("nightly", 1_000_000_080), "nightly-16666668");
    }

    #[test]
    fn a_pipeline_is_checked_for_cycles_defaults_and_scheduled_parameters() {
        let spec: PipelineSpec = serde_yaml::from_str(
            "steps:\n  - {name: a, dependsOn: [b], fail: {message: x}}\n  - {name: b, dependsOn: [a], fail: {message: y}}\n",
        )
        .unwrap();
        assert!(check(&spec).unwrap_err().contains("cycle"));
        let spec: PipelineSpec = serde_yaml::from_str(
            "parameters: [{name: n, type: Integer}]\nschedule: {cron: '* * * * *'}\nsteps:\n  - {name: a, fail: {message: x}}\n",
        )
        .unwrap();
        assert!(
            check(&spec).unwrap_err().contains("need defaults"),
            "{:?}",
            check(&spec)
        );
        let spec: PipelineSpec =
            serde_yaml::from_str("parameters: [{name: n, type: Integer, default: '3'}]\nsteps:\n  - {name: a, fail: {message: x}}\n").unwrap();
        assert!(check(&spec).is_ok());
    }
}
