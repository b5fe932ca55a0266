"""make bench-tuning: Kiln's search strategies against Optuna's samplers on
standard test functions, in one run on this machine.

Every method gets the same budget of sequential trials on the same function
for the same seeds (0..SEEDS-1); a run of the largest budget is read at each
smaller budget too (best value found after the first b trials). The table
prints, per function and budget, each method's median regret (best found
minus the known optimum) with its interquartile range, and the winner (the
lowest median). For the two-objective ZDT1 it prints the hypervolume of the
front found (larger is better) against Optuna's NSGA-II.

The test functions are written twice, here and in examples/bench.rs; before
anything runs, both evaluate the same random points and must agree.

    python bench_tuning.py KILN_BENCH_BINARY [SEEDS] [FUNCTIONS]

FUNCTIONS, comma-separated (branin,hartmann6,rosenbrock4,rosenbrock10,mixed,zdt1),
runs a subset.
"""

import json
import math
import platform
import random
import subprocess
import sys
import time

import numpy as np
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def branin(x):
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x[1] - b * x[0] ** 2 + c * x[0] - 6) ** 2 + 10 * (1 - t) * math.cos(x[0]) + 10


HARTMANN_ALPHA = [1.0, 1.2, 3.0, 3.2]
HARTMANN_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
HARTMANN_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]


def hartmann6(x):
    return -sum(
        HARTMANN_ALPHA[i] * math.exp(-sum(HARTMANN_A[i][j] * (x[j] - HARTMANN_P[i][j]) ** 2 for j in range(6)))
        for i in range(4)
    )


def rosenbrock(x):
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


MIXED_OFFSET = [0.5, 0.0, 1.0, 2.0]
MIXED_SHIFT = [-2.0, 1.5, 0.0, 3.0]
CATEGORIES = ["a", "b", "c", "d"]


def mixed(x):
    c = int(x[3])
    return (math.log10(x[0]) + 2.5) ** 2 + MIXED_OFFSET[c] + (x[1] - MIXED_SHIFT[c]) ** 2 / 4 + (math.log2(x[2]) - 3) ** 2 / 2


def zdt1(x):
    g = 1 + 9 * sum(x[1:]) / (len(x) - 1)
    return [x[0], g * (1 - math.sqrt(x[0] / g))]


ZDT1_DIMS = 4
ZDT1_BUDGETS = [50, 100]
HV_REFERENCE = (1.1, 1.1)


def box(lo, hi, dims):
    return [("float", f"x{i}", lo, hi, False) for i in range(dims)]


# name: (space, optimum, budgets, function); a space entry is
# (kind, name, low, high, log) or ("categorical", name, choices).
PROBLEMS = {
    "branin": ([("float", "x0", -5.0, 10.0, False), ("float", "x1", 0.0, 15.0, False)], 0.397887357729738, [25, 50, 100], branin),
    "hartmann6": (box(0.0, 1.0, 6), -3.32236801141551, [25, 50, 100], hartmann6),
    "rosenbrock4": (box(-5.0, 10.0, 4), 0.0, [25, 50, 100], rosenbrock),
    "rosenbrock10": (box(-5.0, 10.0, 10), 0.0, [50, 100, 200], rosenbrock),
    "mixed": (
        [("float", "lr", 1e-4, 1.0, True), ("float", "x", -5.0, 5.0, False), ("int", "n", 1, 64, True), ("categorical", "c", CATEGORIES)],
        0.0,
        [25, 50, 100],
        mixed,
    ),
}


def suggest(trial, space):
    x = []
    for p in space:
        if p[0] == "float":
            x.append(trial.suggest_float(p[1], p[2], p[3], log=p[4]))
        elif p[0] == "int":
            x.append(float(trial.suggest_int(p[1], p[2], p[3], log=p[4])))
        else:
            x.append(float(p[2].index(trial.suggest_categorical(p[1], p[2]))))
    return x


def random_point(space, rng):
    x = []
    for p in space:
        if p[0] == "categorical":
            x.append(float(rng.randrange(len(p[2]))))
        elif p[0] == "int":
            x.append(float(rng.randint(p[2], p[3])))
        elif p[4]:
            x.append(math.exp(rng.uniform(math.log(p[2]), math.log(p[3]))))
        else:
            x.append(rng.uniform(p[2], p[3]))
    return x


def check_functions_agree(binary):
    rng = random.Random(0)
    lines, expected = [], []
    for name, (space, _, _, f) in PROBLEMS.items():
        for _ in range(5):
            x = random_point(space, rng)
            lines.append(" ".join([name] + [repr(v) for v in x]))
            expected.append([f(x)])
    for _ in range(5):
        x = [rng.random() for _ in range(ZDT1_DIMS)]
        lines.append(" ".join(["zdt1"] + [repr(v) for v in x]))
        expected.append(zdt1(x))
    out = subprocess.run([binary, "eval"], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True).stdout
    for line, want, got in zip(lines, expected, out.splitlines()):
        got = [float(v) for v in got.split()]
        for a, b in zip(want, got):
            if abs(a - b) > 1e-10 * max(1.0, abs(a)):
                sys.exit(f"the Rust and Python test functions disagree at {line}: {want} vs {got}")
    print(f"test functions agree on {len(lines)} points (Rust vs Python)", file=sys.stderr)


def hypervolume_2d(points, ref):
    inside = sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1])
    volume, best_y = 0.0, ref[1]
    for x, y in inside:
        if y < best_y:
            volume += (ref[0] - x) * (best_y - y)
            best_y = y
    return volume


def optuna_run(name, method, seed):
    if name == "zdt1":
        sampler = {"nsga2": optuna.samplers.NSGAIISampler, "random": optuna.samplers.RandomSampler}[method](seed=seed)
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        study.optimize(lambda t: zdt1([t.suggest_float(f"x{i}", 0.0, 1.0) for i in range(ZDT1_DIMS)]), n_trials=ZDT1_BUDGETS[-1])
        values = [t.values for t in study.trials]
        return {"hypervolume": [hypervolume_2d(values[:b], HV_REFERENCE) for b in ZDT1_BUDGETS]}
    space, optimum, budgets, f = PROBLEMS[name]
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[method](seed=seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(lambda t: f(suggest(t, space)), n_trials=budgets[-1])
    values = [t.value for t in study.trials]
    return {"regret": [min(values[:b]) - optimum for b in budgets]}


def quartiles(values):
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return q1, q2, q3


def fmt(v):
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def main():
    binary = sys.argv[1]
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else 20
    only = [f for f in sys.argv[3].split(",") if f] if len(sys.argv) > 3 else []
    wanted = lambda n: not only or n in only  # noqa: E731
    check_functions_agree(binary)
    start = time.time()
    # Rosenbrock 10-D is the long Rust run: it gets a process of its own, so
    # both cores stay busy alongside Optuna.
    functions = [n for n in list(PROBLEMS) + ["zdt1"] if wanted(n)]
    groups = [g for g in (["rosenbrock10"], [n for n in functions if n != "rosenbrock10"]) if any(n in functions for n in g)]
    groups = [[n for n in g if n in functions] for g in groups]
    rust = [subprocess.Popen([binary, "run", str(seeds), ",".join(g)], stdout=subprocess.PIPE, text=True) for g in groups]
    results = {}  # (function, method) -> list of per-seed lists
    optuna_seconds = {}
    for name in functions:
        methods = ["nsga2", "random"] if name == "zdt1" else ["tpe", "random"]
        for method in methods:
            t0 = time.time()
            for seed in range(seeds):
                r = optuna_run(name, method, seed)
                results.setdefault((name, f"optuna-{method}"), []).append(r.get("regret", r.get("hypervolume")))
            optuna_seconds[(name, f"optuna-{method}")] = time.time() - t0
    kiln_seconds = {}
    for p in rust:
        out, _ = p.communicate()
        if p.returncode != 0:
            sys.exit(f"the Rust bench failed ({p.returncode})")
        for line in out.splitlines():
            d = json.loads(line)
            key = (d["function"], f"kiln-{d['method']}")
            results.setdefault(key, []).append(d.get("regret", d.get("hypervolume")))
            kiln_seconds[key] = kiln_seconds.get(key, 0.0) + d["seconds"]
    seconds = {**optuna_seconds, **kiln_seconds}
    print(f"# make bench-tuning: {seeds} seeds, {time.strftime('%Y-%m-%d')}, {platform.machine()}, optuna {optuna.__version__}")
    print(f"# wall {time.time() - start:.0f} s; median over seeds [25th-75th percentile]\n")
    summary = []
    for name in functions:
        methods = sorted({m for (f, m) in results if f == name})
        budgets = ZDT1_BUDGETS if name == "zdt1" else PROBLEMS[name][2]
        metric = "hypervolume (larger is better)" if name == "zdt1" else "regret (smaller is better)"
        print(f"## {name}: {metric}")
        print("| budget | " + " | ".join(methods) + " | best |")
        print("|---|" + "---|" * (len(methods) + 1))
        for bi, b in enumerate(budgets):
            cells, medians = [], {}
            for m in methods:
                q1, q2, q3 = quartiles([r[bi] for r in results[(name, m)]])
                medians[m] = q2
                cells.append(f"{fmt(q2)} [{fmt(q1)}-{fmt(q3)}]")
            pick = max if name == "zdt1" else min
            winner = pick(medians, key=medians.get)
            print(f"| {b} | " + " | ".join(cells) + f" | {winner} |")
            kiln = {m: v for m, v in medians.items() if m.startswith("kiln-") and m != "kiln-random"}
            best_kiln = pick(kiln, key=kiln.get)
            rival = "optuna-nsga2" if name == "zdt1" else "optuna-tpe"
            beats = kiln[best_kiln] >= medians[rival] if name == "zdt1" else kiln[best_kiln] <= medians[rival]
            summary.append((name, b, best_kiln, beats))
        times = ", ".join(f"{m} {seconds.get((name, m), 0.0) / seeds:.2f}" for m in methods)
        print(f"\nseconds per run: {times}\n")
    wins = sum(1 for s in summary if s[3])
    print(f"Kiln's best strategy at or better than {('Optuna TPE / NSGA-II')} in {wins} of {len(summary)} (function, budget) cells")
    for name, b, m, beats in summary:
        if not beats:
            print(f"  behind at {name} {b} ({m})")


if __name__ == "__main__":
    main()
