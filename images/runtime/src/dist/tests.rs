use super::*;

/// Runs `f` on `world` ranks (threads) joined by a real TCP ring on loopback.
pub(crate) fn on_ranks<T: Send>(
    world: usize,
    port: u16,
    f: impl Fn(&mut Comm) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let f = &f;
                s.spawn(move || {
                    let config = DistConfig {
                        rank,
                        world,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                    };
                    let mut comm = Comm::connect(&config, Duration::from_secs(30)).unwrap();
                    f(&mut comm)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ring_sums_match_for_2_3_and_4_ranks() {
    for (world, port) in [(2, 29611), (3, 29612), (4, 29613)] {
        let results = on_ranks(world, port, |comm| {
            let r = comm.rank as f32;
            // 7 elements: chunks of unequal size, one rank's chunk may be tiny.
            let a = Tensor::from_slice(&[r, 1.0, 2.0 * r, 3.0, 4.0, 5.0, r * r]);
            let b = Tensor::from_slice(&[r as f64; 3]).view([3, 1]);
            let out = comm.sum(&[&a, &b]).unwrap();
            let stop = comm.sum_f64(&[1.0]).unwrap();
            (
                Vec::<f32>::try_from(&out[0]).unwrap(),
                out[1].size(),
                out[1].kind(),
                stop[0],
            )
        });
        let s: f32 = (0..world).map(|r| r as f32).sum();
        let sq: f32 = (0..world).map(|r| (r * r) as f32).sum();
        let w = world as f32;
        for (a, bshape, bkind, stop) in results {
            assert_eq!(a, [s, w, 2.0 * s, 3.0 * w, 4.0 * w, 5.0 * w, sq]);
            assert_eq!(bshape, [3, 1]);
            assert_eq!(bkind, Kind::Double);
            assert_eq!(stop, world as f64);
        }
    }
}

#[test]
fn broadcast_sends_rank_zeros_values() {
    let results = on_ranks(3, 29614, |comm| {
        let t = Tensor::from_slice(&[comm.rank as f32 + 10.0]);
        f32::try_from(&comm.broadcast(&[&t]).unwrap()[0].view(-1).get(0)).unwrap()
    });
    assert_eq!(results, [10.0, 10.0, 10.0]);
}

#[test]
fn gather_collects_every_ranks_values() {
    let results = on_ranks(3, 29615, |comm| {
        let mine: Vec<f64> = (0..comm.rank)
            .map(|i| (10 * comm.rank + i) as f64)
            .collect();
        comm.gather_f64(&mine).unwrap()
    });
    for all in results {
        assert_eq!(all, vec![vec![], vec![10.0], vec![20.0, 21.0]]);
    }
}

#[test]
fn env_config() {
    let resources = crate::contract::ResourceConfig {
        current_host: Some("algo-2".into()),
        hosts: vec!["algo-1".into(), "algo-2".into()],
    };
    // Only meaningful when the test runner has no WORLD_SIZE of its own.
    if std::env::var_os("WORLD_SIZE").is_none() && std::env::var_os("PET_NNODES").is_none() {
        let c = DistConfig::from_env(&resources).unwrap();
        assert_eq!((c.rank, c.world, c.master_addr.as_str()), (1, 2, "algo-1"));
    }
}
