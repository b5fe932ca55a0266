//! The Rust half of `make bench-tuning`: runs Kiln's strategies on the
//! standard test functions and prints one JSON line per (function, method,
//! seed) with the best value found after each budget (or, for the
//! two-objective problem, the hypervolume of the front).
//!
//!     bench run [SEEDS] [FUNCTIONS]   # FUNCTIONS: comma-separated subset
//!     bench eval                      # stdin "function x1 x2 ...": the values, one per line
//!
//! The functions are written the same way in bench/bench_tuning.py, which
//! checks that both sides agree on a few points.

use std::f64::consts::PI;
use std::io::BufRead;
use std::time::Instant;

use kiln_tuning::pareto::{hypervolume, pareto_front};
use kiln_tuning::{
    Bayesian, Direction, ParEgo, Param, Random, Scale, Space, Strategy, Tpe, Trial, Value,
};
use serde_json::json;

/// A single-objective test function: its space, optimum and budgets.
struct Problem {
    name: &'static str,
    space: Space,
    optimum: f64,
    budgets: &'static [usize],
    f: fn(&[f64]) -> f64,
}

fn branin(x: &[f64]) -> f64 {
    let (b, c, t) = (5.1 / (4.0 * PI * PI), 5.0 / PI, 1.0 / (8.0 * PI));
    (x[1] - b * x[0] * x[0] + c * x[0] - 6.0).powi(2) + 10.0 * (1.0 - t) * x[0].cos() + 10.0
}

fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    -(0..4)
        .map(|i| {
            ALPHA[i]
                * (-(0..6)
                    .map(|j| A[i][j] * (x[j] - P[i][j]).powi(2))
                    .sum::<f64>())
                .exp()
        })
        .sum::<f64>()
}

fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2)
        .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
        .sum()
}

/// A mixed space: a log-scaled rate, a real, a log-scaled integer and a
/// categorical that moves the real's optimum and adds an offset.
fn mixed(x: &[f64]) -> f64 {
    const OFFSET: [f64; 4] = [0.5, 0.0, 1.0, 2.0];
    const SHIFT: [f64; 4] = [-2.0, 1.5, 0.0, 3.0];
    let c = x[3] as usize;
    (x[0].log10() + 2.5).powi(2)
        + OFFSET[c]
        + (x[1] - SHIFT[c]).powi(2) / 4.0
        + (x[2].log2() - 3.0).powi(2) / 2.0
}

/// ZDT1: f1 = x1, f2 = g (1 - sqrt(x1 / g)), g = 1 + 9 mean(x2..).
fn zdt1(x: &[f64]) -> [f64; 2] {
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    [x[0], g * (1.0 - (x[0] / g).sqrt())]
}

const ZDT1_DIMS: usize = 4;
const ZDT1_BUDGETS: &[usize] = &[50, 100];
const HV_REFERENCE: [f64; 2] = [1.1, 1.1];

fn box_space(names: &str, lo: f64, hi: f64, dims: usize) -> Space {
    let params =
        (0..dims).map(|i| Param::continuous(&format!("{names}{i}"), lo, hi, Scale::Linear));
    Space::new(params.collect()).expect("valid space")
}

fn problems() -> Vec<Problem> {
    let branin_space = Space::new(vec![
        Param::continuous("x0", -5.0, 10.0, Scale::Linear),
        Param::continuous("x1", 0.0, 15.0, Scale::Linear),
    ]);
    let mixed_space = Space::new(vec![
        Param::continuous("lr", 1e-4, 1.0, Scale::Log),
        Param::continuous("x", -5.0, 5.0, Scale::Linear),
        Param::integer("n", 1, 64, Scale::Log),
        Param::categorical("c", &["a", "b", "c", "d"]),
    ]);
    vec![
        Problem {
            name: "branin",
            space: branin_space.unwrap(),
            optimum: 0.397_887_357_729_738,
            budgets: &[25, 50, 100],
            f: branin,
        },
        Problem {
            name: "hartmann6",
            space: box_space("x", 0.0, 1.0, 6),
            optimum: -3.322_368_011_415_51,
            budgets: &[25, 50, 100],
            f: hartmann6,
        },
        Problem {
            name: "rosenbrock4",
            space: box_space("x", -5.0, 10.0, 4),
            optimum: 0.0,
            budgets: &[25, 50, 100],
            f: rosenbrock,
        },
        Problem {
            name: "rosenbrock10",
            space: box_space("x", -5.0, 10.0, 10),
            optimum: 0.0,
            budgets: &[50, 100, 200],
            f: rosenbrock,
        },
        Problem {
            name: "mixed",
            space: mixed_space.unwrap(),
            optimum: 0.0,
            budgets: &[25, 50, 100],
            f: mixed,
        },
    ]
}

/// A point as the numbers the functions take (categories as their index).
fn numbers(config: &[Value]) -> Vec<f64> {
    config
        .iter()
        .map(|v| match v {
            Value::Float(x) => *x,
            Value::Int(i) => *i as f64,
            Value::Category(c) => *c as f64,
        })
        .collect()
}

fn strategy(method: &str, space: &Space, seed: u64) -> Box<dyn Strategy> {
    match method {
        "bayesian" => Box::new(Bayesian::new(space.clone(), Direction::Minimize, seed)),
        "tpe" => Box::new(Tpe::new(space.clone(), Direction::Minimize, seed)),
        "random" => Box::new(Random::new(space.clone(), seed)),
        "parego" => Box::new(ParEgo::new(
            space.clone(),
            vec![Direction::Minimize; 2],
            seed,
        )),
        other => panic!("no method {other}"),
    }
}

/// Runs `budget` trials one at a time, each evaluated by `f`.
fn run(strategy: &mut dyn Strategy, budget: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<Trial> {
    let mut history = Vec::with_capacity(budget);
    while history.len() < budget {
        let Some(s) = strategy.suggest(&history, 1).pop() else {
            break;
        };
        let values = f(&numbers(&s.config));
        history.push(Trial::completed(s.config, values));
    }
    history
}

fn run_all(seeds: u64, only: &[String]) {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    for p in problems().into_iter().filter(|p| wanted(p.name)) {
        let max = *p.budgets.last().unwrap();
        for method in ["bayesian", "tpe", "random"] {
            for seed in 0..seeds {
                let start = Instant::now();
                let history = run(strategy(method, &p.space, seed).as_mut(), max, |x| {
                    vec![(p.f)(x)]
                });
                let best: Vec<f64> = p
                    .budgets
                    .iter()
                    .map(|b| {
                        history[..*b]
                            .iter()
                            .map(|t| t.values[0])
                            .fold(f64::INFINITY, f64::min)
                            - p.optimum
                    })
                    .collect();
                let line = json!({"function": p.name, "method": method, "seed": seed, "budgets": p.budgets, "regret": best, "seconds": start.elapsed().as_secs_f64()});
                println!("{line}");
            }
        }
    }
    if wanted("zdt1") {
        let space = box_space("x", 0.0, 1.0, ZDT1_DIMS);
        let max = *ZDT1_BUDGETS.last().unwrap();
        for method in ["parego", "random"] {
            for seed in 0..seeds {
                let start = Instant::now();
                let history = run(strategy(method, &space, seed).as_mut(), max, |x| {
                    zdt1(x).to_vec()
                });
                let hv: Vec<f64> = ZDT1_BUDGETS
                    .iter()
                    .map(|b| {
                        let seen = &history[..*b];
                        let front = pareto_front(seen, &[Direction::Minimize; 2]);
                        hypervolume(
                            &front
                                .iter()
                                .map(|i| seen[*i].values.clone())
                                .collect::<Vec<_>>(),
                            &HV_REFERENCE,
                        )
                    })
                    .collect();
                let line = json!({"function": "zdt1", "method": method, "seed": seed, "budgets": ZDT1_BUDGETS, "hypervolume": hv, "seconds": start.elapsed().as_secs_f64()});
                println!("{line}");
            }
        }
    }
}

fn eval() {
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let x: Vec<f64> = words.map(|w| w.parse().expect("a number")).collect();
        let values: Vec<f64> = match name {
            "zdt1" => zdt1(&x).to_vec(),
            name => {
                let p = problems()
                    .into_iter()
                    .find(|p| p.name == name)
                    .expect("a known function");
                vec![(p.f)(&x)]
            }
        };
        println!(
            "{}",
            values
                .iter()
                .map(|v| format!("{v:.17e}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let seeds = args
                .get(1)
                .map_or(20, |s| s.parse().expect("SEEDS is a number"));
            let only: Vec<String> = args
                .get(2)
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            run_all(seeds, &only);
        }
        Some("eval") => eval(),
        _ => {
            eprintln!("usage: bench run [SEEDS] [FUNCTIONS] | bench eval");
            std::process::exit(2);
        }
    }
}
