//! Per-object backoff of reconciles that failed transiently: the first retry
//! after 1 s, doubling to 5 minutes, and back to 1 s after a success. A
//! flapping API server or a refused write therefore costs one object a few
//! requests a minute, not one every 5 s forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::ResourceExt;

/// The longest wait between retries.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// Failures in a row, by object.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Counts a failure of `key` and returns the wait before its retry.
    pub fn next(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// Forgets `key`'s failures after a successful reconcile.
    pub fn reset(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// The wait after `failures` failures in a row: 1 s, 2 s, 4 s, ... 5 min.
pub fn delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_DELAY)
}

/// The backoff key of an object: kind, namespace and name.
pub fn key<K: ResourceExt>(kind: &str, object: &K) -> String {
    format!(
        "{kind}/{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_five_minutes_and_a_success_starts_over() {
        let waits: Vec<u64> = (1..=11).map(|n| delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
        let b = Backoff::default();
        assert_eq!(b.next("TrainingJob/ns/a"), Duration::from_secs(1));
        assert_eq!(b.next("TrainingJob/ns/a"), Duration::from_secs(2));
        assert_eq!(
            b.next("TrainingJob/ns/b"),
            Duration::from_secs(1),
            "per object"
        );
        b.reset("TrainingJob/ns/a");
        assert_eq!(b.next("TrainingJob/ns/a"), Duration::from_secs(1));
    }
}
