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

/// Runs `f` on `world` ranks like [`on_ranks`], each rank's result with
/// the seconds its call took.
fn timed_on_ranks<T: Send>(
    world: usize,
    port: u16,
    f: impl Fn(&mut Comm) -> T + Sync,
) -> Vec<(T, f64)> {
    on_ranks(world, port, |comm| {
        let start = std::time::Instant::now();
        let out = f(comm);
        (out, start.elapsed().as_secs_f64())
    })
}

fn floats(n: usize) -> Tensor {
    Tensor::from_slice(&vec![1.0f32; n])
}

#[test]
fn ranks_summing_different_lengths_fail_at_once_naming_both_sides() {
    // 56 collectives in step, then the 57th of 12 floats on rank 0 and of
    // 10 on rank 1.
    let out = timed_on_ranks(2, 29617, |comm| {
        for _ in 0..56 {
            comm.sum_f64(&[1.0]).unwrap();
        }
        let n = if comm.rank == 0 { 12 } else { 10 };
        let err = comm.sum(&[&floats(n)]).unwrap_err().to_string();
        // The ring is broken from then on.
        let again = comm.sum_f64(&[1.0]).unwrap_err().to_string();
        (err, again)
    });
    let want = [
        "rank 1 sent all-reduce #57 of 10 f32, rank 0 expected all-reduce #57 of 12 f32",
        "rank 0 sent all-reduce #57 of 12 f32, rank 1 expected all-reduce #57 of 10 f32",
    ];
    for (rank, ((err, again), seconds)) in out.into_iter().enumerate() {
        assert!(err.contains(want[rank]), "rank {rank}: {err}");
        assert!(again.contains("failed earlier"), "rank {rank}: {again}");
        assert!(seconds < 5.0, "rank {rank} took {seconds} s");
    }
}

#[test]
fn one_rank_out_of_three_fails_the_ring_at_once() {
    // Rank 2 sums 12 floats (in 4-value chunks), ranks 0 and 1 sum 10:
    // rank 2 hears of it from rank 1, rank 0 from rank 2, and rank 1, whose
    // neighbours stop, sees its connection close.
    let out = timed_on_ranks(3, 29618, |comm| {
        let n = if comm.rank == 2 { 12 } else { 10 };
        comm.sum(&[&floats(n)]).unwrap_err().to_string()
    });
    let (errs, seconds): (Vec<String>, Vec<f64>) = out.into_iter().unzip();
    assert!(
        errs[0].contains(
            "rank 2 sent all-reduce #1 of 12 f32, rank 0 expected all-reduce #1 of 10 f32"
        ),
        "{}",
        errs[0]
    );
    assert!(
        errs[2].contains(
            "rank 1 sent all-reduce #1 of 10 f32, rank 2 expected all-reduce #1 of 12 f32"
        ),
        "{}",
        errs[2]
    );
    assert!(errs[1].contains("closed the connection"), "{}", errs[1]);
    for (rank, s) in seconds.iter().enumerate() {
        assert!(*s < 5.0, "rank {rank} took {s} s");
    }
}

#[test]
fn ranks_running_different_operations_fail_naming_both() {
    // A broadcast against a sum, a gather against a sum, f64 against f32,
    // and a pipeline send where the other rank sums.
    let cases: [(&str, &str, u16); 4] = [
        (
            "rank 1 sent all-reduce #1 of 3 f32, rank 0 expected broadcast #1 of 3 f32",
            "rank 0 sent broadcast #1 of 3 f32, rank 1 expected all-reduce #1 of 3 f32",
            29619,
        ),
        (
            "rank 1 sent all-reduce #1 of 2 f64, rank 0 expected gather #1 of 2 f64",
            "rank 0 sent gather #1 of 2 f64, rank 1 expected all-reduce #1 of 2 f64",
            29620,
        ),
        (
            "rank 1 sent all-reduce #1 of 3 f32, rank 0 expected all-reduce #1 of 3 f64",
            "rank 0 sent all-reduce #1 of 3 f64, rank 1 expected all-reduce #1 of 3 f32",
            29621,
        ),
        (
            "",
            "rank 0 sent pipeline send #1 of 6 f32, rank 1 expected all-reduce #1 of 3 f32",
            29622,
        ),
    ];
    for (case, (want0, want1, port)) in cases.into_iter().enumerate() {
        let out = timed_on_ranks(2, port, |comm| {
            let r = match (case, comm.rank) {
                (0, 0) => comm.broadcast(&[&floats(3)]).map(drop),
                (1, 0) => comm.gather_f64(&[1.0]).map(drop),
                (2, 0) => comm.sum_f64(&[1.0; 3]).map(drop),
                (3, 0) => comm
                    .send(true, &floats(6).view([2, 3]))
                    .and_then(|()| comm.sum(&[&floats(3)]).map(drop)),
                (1, _) => comm.sum_f64(&[1.0; 2]).map(drop),
                _ => comm.sum(&[&floats(3)]).map(drop),
            };
            r.unwrap_err().to_string()
        });
        for (rank, (err, seconds)) in out.iter().enumerate() {
            let want = [want0, want1][rank];
            assert!(err.contains(want), "case {case} rank {rank}: {err}");
            assert!(*seconds < 5.0, "case {case} rank {rank} took {seconds} s");
        }
    }
}

#[test]
fn pipeline_tensors_travel_both_ways_with_their_shapes() {
    let out = on_ranks(2, 29623, |comm| {
        if comm.rank == 0 {
            let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]);
            comm.send(true, &t).unwrap();
            comm.send(true, &Tensor::from_slice(&[7.0f32])).unwrap();
            assert_eq!(comm.sum_f64(&[1.0]).unwrap(), [2.0]);
            let g = comm.recv(false).unwrap();
            (g.size(), Vec::<f32>::try_from(g.view(-1)).unwrap())
        } else {
            let a = comm.recv(true).unwrap();
            let b = comm.recv(true).unwrap();
            assert_eq!(Vec::<f32>::try_from(&b).unwrap(), [7.0]);
            // In between, a collective: its numbering is the ring's own.
            assert_eq!(comm.sum_f64(&[1.0]).unwrap(), [2.0]);
            comm.send(false, &(a * 2.0)).unwrap();
            (vec![], vec![])
        }
    });
    assert_eq!(out[0].0, [2, 3]);
    assert_eq!(out[0].1, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
}

/// A ring of one rank (`rank` 1 of 2) whose two peers are the test: the
/// streams the test writes to the ring as its previous and next rank.
fn fake_peers() -> (ring::Ring, std::net::TcpStream, std::net::TcpStream) {
    let pair = || {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    };
    let (next, next_peer) = pair();
    let (prev, prev_peer) = pair();
    let mut ring = ring::Ring::from_streams(1, 2, next, prev);
    ring.set_timeout(Duration::from_secs(5)).unwrap();
    (ring, prev_peer, next_peer)
}

#[test]
fn oversized_announcements_are_refused_before_allocating() {
    use super::ring::{Header, Op};
    use std::io::Write;
    // A pipeline tensor of 10^12 floats (4 TB): refused at the header.
    let (mut r, mut prev, _next) = fake_peers();
    let h = Header::new(Op::PipelineSend, 1, 0, 1, 1_000_000_000_000);
    prev.write_all(&h.encode()).unwrap();
    let err = r.recv_tensor(true).unwrap_err().to_string();
    assert!(
        err.contains("rank 0 announced pipeline send #1 of 1000000000000 f32: 4000000000000 bytes, more than the 2147483648-byte limit"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    // A small count with a shape of 10^12 values, and a shape of 1000
    // dimensions.
    for (dims, want) in [
        (vec![1_000_000i64, 1_000_000], "does not hold 6 values"),
        (vec![-2, -3], "does not hold 6 values"),
        (vec![1; 1000], "a shape of 1000 dimensions"),
    ] {
        let (mut r, mut prev, _next) = fake_peers();
        let mut msg = Header::new(Op::PipelineSend, 1, 0, 1, 6).encode().to_vec();
        msg.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims.iter().take(16) {
            msg.extend_from_slice(&d.to_le_bytes());
        }
        prev.write_all(&msg).unwrap();
        let err = r.recv_tensor(true).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("refused"), "{err}");
    }
    // In an all-reduce the receiver knows its length: 10^12 announced
    // against 10 is a mismatch, and nothing is read past the header.
    let (mut r, mut prev, _next) = fake_peers();
    let h = Header::new(Op::AllReduce, 1, 0, 1, 1_000_000_000_000);
    prev.write_all(&h.encode()).unwrap();
    let err = r.all_reduce(&mut [0f32; 10]).unwrap_err().to_string();
    assert!(
        err.contains("rank 0 sent all-reduce #1 of 1000000000000 f32, rank 1 expected all-reduce #1 of 10 f32"),
        "{err}"
    );
    // Bytes that are no ring message at all.
    let (mut r, mut prev, _next) = fake_peers();
    prev.write_all(&[0xAB; ring::HEADER_BYTES]).unwrap();
    let err = r.all_reduce(&mut [0f32; 10]).unwrap_err().to_string();
    assert!(err.contains("sent bytes that are no ring message"), "{err}");
}

#[test]
fn a_peer_that_stops_reading_or_writing_times_out() {
    // Nothing arrives: the read gives up after the timeout.
    let (mut r, _prev, _next) = fake_peers();
    r.set_timeout(Duration::from_millis(300)).unwrap();
    let start = std::time::Instant::now();
    let err = r.recv_tensor(true).unwrap_err().to_string();
    assert!(err.contains("rank 0 did not answer for 300ms"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    // The next rank never reads: sending 64 MiB fills the connection's
    // buffers, and the write gives up after the timeout.
    let (mut r, _prev, _next) = fake_peers();
    r.set_timeout(Duration::from_millis(300)).unwrap();
    let start = std::time::Instant::now();
    let big = Tensor::zeros([16 << 20], (Kind::Float, tch::Device::Cpu));
    let err = r.send_tensor(true, &big).unwrap_err().to_string();
    assert!(
        err.contains("sending pipeline send #1 to rank 0: rank 0 did not answer for 300ms"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
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
