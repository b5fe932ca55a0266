//! Throughput of the ring all-reduce on loopback: `world` ranks (threads of
//! this process, each with its own ring connections, as separate pods
//! would have) sum a buffer of `len` float32 values `reps` times; rank 0
//! prints each call's seconds and the median.
//!
//!     ring_bench [WORLD (2)] [LEN (10000000)] [REPS (5)]
//!
//! Time it built with release settings (`cargo build --release -p
//! kiln-runtime --example ring_bench`): the debug profile's assertions in
//! the inlined standard library change the element loops' cost.

use std::time::{Duration, Instant};

use kiln_runtime::dist::{DistConfig, Ring};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (world, len, reps) = (arg(1, 2), arg(2, 10_000_000), arg(3, 5));
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let times = std::thread::scope(|s| {
        let ranks: Vec<_> = (0..world)
            .map(|rank| {
                s.spawn(move || {
                    let config = DistConfig {
                        rank,
                        world,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                    };
                    let mut ring = Ring::connect(&config, Duration::from_secs(30)).expect("ring");
                    let mut buf = vec![0f32; len];
                    let mut times = Vec::new();
                    // One call first: the connections' buffers grow to size.
                    for rep in 0..=reps {
                        buf.iter_mut().for_each(|v| *v = rank as f32 + 1.0);
                        let start = Instant::now();
                        ring.all_reduce(&mut buf).expect("all-reduce");
                        let seconds = start.elapsed().as_secs_f64();
                        let want = (world * (world + 1) / 2) as f32;
                        assert!(buf.iter().all(|&v| v == want), "wrong sums");
                        if rep > 0 {
                            times.push(seconds);
                        }
                    }
                    times
                })
            })
            .collect();
        let all: Vec<Vec<f64>> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
        all.into_iter().next().unwrap()
    });
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let shown: Vec<String> = times.iter().map(|t| format!("{:.1}", t * 1e3)).collect();
    println!(
        "world {world}, {len} f32: median {:.1} ms ({:.2} GB/s of buffer), calls [{}] ms",
        median * 1e3,
        len as f64 * 4.0 / median / 1e9,
        shown.join(", ")
    );
}
