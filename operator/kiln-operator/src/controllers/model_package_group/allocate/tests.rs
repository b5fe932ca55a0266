use super::*;
use k8s_openapi::jiff::Timestamp;
use kiln_api::model_package::{ModelPackageSpec, ModelPackageStatus};
use serde_json::json;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
}

fn package(name: &str, created: i64, version: Option<i64>, approval: &str) -> ModelPackage {
    let spec: ModelPackageSpec = serde_json::from_value(json!({
        "groupName": "g",
        "inference": {"modelData": {"uri": format!("s3://b/{name}.tar.gz")}, "algorithm": "mlp"},
        "approval": {"status": approval},
    }))
    .unwrap();
    let mut p = ModelPackage::new(name, spec);
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.creation_timestamp = Some(at(created));
    p.status = Some(ModelPackageStatus {
        version,
        last_approval_change_time: Some(at(created + 1)),
        ..ModelPackageStatus::default()
    });
    p
}

#[test]
fn numbers_go_up_by_one_and_a_cut_short_allocation_is_completed_with_its_number() {
    let empty = ModelPackageGroupStatus::default();
    let Allocation::New(1, first) = allocate(&empty, "a", "uid-a", 0) else {
        panic!("not a new number 1");
    };
    assert_eq!(first.latest_version, 1);
    let last = first.last_allocation.clone().unwrap();
    assert_eq!(
        (last.version, last.name.as_str(), last.uid.as_deref()),
        (1, "a", Some("uid-a"))
    );
    // The operator stopped before writing the package: the same number again.
    assert_eq!(allocate(&first, "a", "uid-a", 0), Allocation::Reuse(1));
    let Allocation::New(2, second) = allocate(&first, "b", "uid-b", 0) else {
        panic!("not a new number 2");
    };
    assert_eq!(second.latest_version, 2);
    // A group made again over old packages numbers past them.
    assert!(matches!(
        allocate(&empty, "c", "uid-c", 7),
        Allocation::New(8, _)
    ));
}

/// The group's status as the API server keeps it: a write succeeds only
/// when it carries the current resourceVersion.
struct Server {
    resource_version: u64,
    status: ModelPackageGroupStatus,
    versions: std::collections::BTreeMap<String, i64>,
}

/// One allocation as the controller makes it, for `uid`, reading and
/// writing the server in the order `steps` lets it: the pure decision, the
/// conditional write (a conflict means read again and decide again), then
/// the package's own write, unless `crash` stops it after the group's.
#[derive(Clone)]
struct Allocator {
    uid: String,
    seen: Option<(u64, ModelPackageGroupStatus)>,
    taken: Option<i64>,
    done: bool,
}

impl Allocator {
    fn step(&mut self, server: &mut Server, crash: bool) {
        if self.done {
            return;
        }
        if let Some(version) = self.taken {
            if !crash {
                server.versions.insert(self.uid.clone(), version);
            }
            self.done = true;
            return;
        }
        let Some((rv, status)) = self.seen.take() else {
            self.seen = Some((server.resource_version, server.status.clone()));
            return;
        };
        match allocate(&status, &self.uid, &self.uid, 0) {
            Allocation::Reuse(version) => self.taken = Some(version),
            Allocation::New(version, next) => {
                if rv == server.resource_version {
                    server.status = *next;
                    server.resource_version += 1;
                    self.taken = Some(version);
                }
                // Else 409: read again at the next step.
            }
        }
    }
}

#[test]
fn ten_packages_numbered_at_once_get_ten_distinct_numbers_even_through_crashes() {
    // Ten allocators interleaved in many orders (a small deterministic
    // generator), with some package writes lost to a crash and redone.
    let mut seed = 0x2545_f491_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200 {
        let mut server = Server {
            resource_version: 1,
            status: ModelPackageGroupStatus::default(),
            versions: Default::default(),
        };
        let mut allocators: Vec<Allocator> = (0..10)
            .map(|i| Allocator {
                uid: format!("p{i}"),
                seen: None,
                taken: None,
                done: false,
            })
            .collect();
        let mut crashes = 0;
        while allocators.iter().any(|a| !a.done) {
            let i = (next() % 10) as usize;
            let crash = next() % 7 == 0;
            if crash && allocators[i].taken.is_some() && !allocators[i].done {
                crashes += 1;
            }
            allocators[i].step(&mut server, crash);
        }
        // The crashed ones try again from the start, one after another, as
        // the restarted operator does.
        for a in &mut allocators {
            if !server.versions.contains_key(&a.uid) {
                *a = Allocator {
                    seen: None,
                    taken: None,
                    done: false,
                    ..a.clone()
                };
                while !a.done {
                    a.step(&mut server, false);
                }
            }
        }
        let mut numbers: Vec<i64> = server.versions.values().copied().collect();
        numbers.sort_unstable();
        let unique = numbers.len();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            unique,
            "a number given twice: {:?}",
            server.versions
        );
        assert_eq!(unique, 10, "{:?}", server.versions);
        if crashes == 0 {
            assert_eq!(
                numbers,
                (1..=10).collect::<Vec<_>>(),
                "no gap without a crash"
            );
        }
        assert_eq!(server.status.latest_version, *numbers.last().unwrap());
    }
}

#[test]
fn new_versions_are_numbered_in_creation_order_the_cut_short_one_first() {
    let mut deleting = package("gone", 0, None, "Approved");
    deleting.metadata.deletion_timestamp = Some(at(9));
    let packages = vec![
        package("c", 5, None, "PendingManualApproval"),
        package("numbered", 1, Some(1), "Approved"),
        package("b", 3, None, "PendingManualApproval"),
        package("a", 3, None, "PendingManualApproval"),
        deleting,
    ];
    let names = |order: Vec<usize>| -> Vec<String> {
        order.into_iter().map(|i| packages[i].name_any()).collect()
    };
    let status = ModelPackageGroupStatus::default();
    assert_eq!(names(numbering_order(&packages, &status)), ["a", "b", "c"]);
    let cut_short = ModelPackageGroupStatus {
        last_allocation: Some(VersionReference {
            version: 2,
            name: "c".into(),
            uid: Some("uid-c".into()),
            approval_time: None,
        }),
        ..status
    };
    assert_eq!(
        names(numbering_order(&packages, &cut_short)),
        ["c", "a", "b"]
    );
}

#[test]
fn the_summary_names_the_newest_approved_intact_version_and_counts() {
    let mut changed = package("v4", 4, Some(4), "Approved");
    changed
        .status
        .as_mut()
        .unwrap()
        .conditions
        .push(conditions::condition(
            types::ARTIFACT_VERIFIED,
            false,
            reasons::ARTIFACT_CHANGED,
            "other bytes",
            Some(1),
            at(50),
        ));
    let packages = vec![
        package("v1", 1, Some(1), "Approved"),
        package("v2", 2, Some(2), "Approved"),
        package("v3", 3, Some(3), "Rejected"),
        changed,
        package("v5", 5, Some(5), "PendingManualApproval"),
        package("new", 6, None, "Approved"),
    ];
    let mut status = ModelPackageGroupStatus {
        latest_version: 5,
        ..ModelPackageGroupStatus::default()
    };
    summarize(&mut status, &packages, Some(1), &at(60));
    let newest = status.latest_approved.clone().unwrap();
    assert_eq!((newest.version, newest.name.as_str()), (2, "v2"));
    assert_eq!(newest.uid.as_deref(), Some("uid-v2"));
    assert_eq!(newest.approval_time, Some(at(3)));
    assert_eq!(
        (
            status.version_count,
            status.approved_count,
            status.pending_approval_count
        ),
        (5, 3, 1)
    );
    assert_eq!(status.latest_version, 5, "the counter is not the summary's");
    let ready = conditions::find(&status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", reasons::APPROVED_VERSION)
    );
    assert!(
        ready.message.contains("version 2 (ModelPackage v2)"),
        "{}",
        ready.message
    );

    let mut none = ModelPackageGroupStatus::default();
    summarize(&mut none, &packages[2..3], Some(1), &at(60));
    assert_eq!(none.latest_approved, None);
    let ready = conditions::find(&none.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reasons::NO_APPROVED_VERSION)
    );
}
