"""make bench-train: Kiln's built-in algorithms against scikit-learn on the
same data, in one run on this machine.

For each algorithm both sides train on the same rows and are scored on the
same held-out rows; the table prints each time, the ratio (scikit-learn time
/ Kiln time: above 1 means Kiln is faster) and both quality numbers. Kiln's
time is its `train:fit_seconds` metric (the run without reading the
channel); scikit-learn's is the fit (and, for knn, the prediction of the
held-out rows, which Kiln also does inside its run).

For k-means it also prints this machine's limit for one Lloyd iteration: the
larger of one pass over the data (a sum over the whole float32 array with all
threads) and the distance arithmetic (2 x rows x features x k flops) at the
machine's dense matmul rate (a 2048x2048 float32 matmul, timed here). Kiln's
k-means job (three runs) and the limit (five passes after each run) are
measured alternately, and the median of Kiln's iterations (each run emits
every iteration's time as `train:step_seconds`) is compared with the median
pass: on a shared host the speed of the same code drifts by a quarter over
seconds, alternating puts both under the same drift, and medians on both
sides keep a stray slow step (or pass) from deciding the ratio. The table's
k-means row is the median of the three runs' mean iteration times.

    python bench_train.py KILN_RUNTIME_BINARY WORKDIR [ALGORITHMS]

ALGORITHMS, comma-separated (kmeans,pca,linreg,logreg,knn), runs a subset.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.datasets import make_blobs, make_classification, make_regression
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

SEED = 0


def write_parquet(path, x, y=None):
    os.makedirs(path, exist_ok=True)
    cols = {} if y is None else {"label": y.astype(np.float32)}
    for i in range(x.shape[1]):
        cols[f"f{i}"] = x[:, i]
    pq.write_table(pa.table(cols), os.path.join(path, "part-0.parquet"), row_group_size=1 << 16)


def kiln(binary, work, name, algorithm, hyper, channels):
    root = os.path.join(work, "jobs", name)
    subprocess.run(["rm", "-rf", root], check=True)
    os.makedirs(os.path.join(root, "input/config"))
    with open(os.path.join(root, "input/config/hyperparameters.json"), "w") as f:
        json.dump({k: str(v) for k, v in hyper.items()}, f)
    for channel, src in channels.items():
        os.makedirs(os.path.join(root, "input/data"), exist_ok=True)
        os.symlink(src, os.path.join(root, "input/data", channel))
    out = subprocess.run(
        [binary, "train", "--algorithm", algorithm, "--ml-root", root, "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"kiln {name} failed: {out.stderr}")
    with open(os.path.join(root, "output/metrics.json")) as f:
        latest = {k: v["value"] for k, v in json.load(f)["metrics"].items()}
    # Every value of every metric, in order, from the structured stdout lines.
    latest["series"] = {}
    for line in out.stdout.splitlines():
        if line.startswith("{") and "kiln_metric" in line:
            point = json.loads(line)
            latest["series"].setdefault(point["kiln_metric"], []).append(point["value"])
    return latest


def timings(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_of(fn, repeat=3):
    return min(timings(fn, repeat))


def machine_limit_times(x):
    """Five timings each of one pass over x and of a 2048 x 2048 matmul."""
    t = torch.from_numpy(x)
    torch.set_num_threads(os.cpu_count())
    passes = timings(lambda: t.sum(), 5)
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    return passes, timings(lambda: torch.mm(a, b), 5)


def median(values):
    return sorted(values)[len(values) // 2]


def bench_kmeans(binary, work, data):
    rows = []
    # k-means: 1M x 50, k = 8, at most 10 Lloyd iterations.
    n, d, k, iters = 1_000_000, 50, 8, 10
    # Overlapping blobs: Lloyd does not settle within 10 iterations, so both
    # sides run them all (well-separated blobs converge in 2, and a per-
    # iteration time from 1 iteration is noise).
    x, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=8.0, random_state=SEED)
    x = x.astype(np.float32)
    write_parquet(f"{data}/kmeans", x)
    # scikit-learn's iterations are timed from fixed k-means++ centers, so
    # its seeding stays out of the per-iteration time (Kiln's metric times
    # its Lloyd loop alone). It stops early once no label changes.
    init, _ = kmeans_plusplus(x, n_clusters=k, random_state=SEED)
    model = KMeans(n_clusters=k, init=init, n_init=1, max_iter=iters, tol=0, algorithm="lloyd")
    sk_iter = best_of(lambda: model.fit(x), 1) / max(model.n_iter_, 1)
    sk_inertia = model.inertia_
    runs, passes, matmuls = [], [], []
    for _ in range(3):
        runs.append(kiln(binary, work, "kmeans", "kmeans", {"k": k, "max_iter": iters, "tol": 0}, {"train": f"{data}/kmeans"}))
        p, mm = machine_limit_times(x)
        passes += p
        matmuls += mm
    if model.n_iter_ < iters:
        print(f"note: scikit-learn's k-means converged after {model.n_iter_} iterations")
    steps = [t for m in runs for t in m["series"]["train:step_seconds"]]
    means = [m["train:iteration_seconds"] for m in runs]
    print(f"kiln k-means iterations, 3 runs: {len(steps)} steps, median {median(steps) * 1000:.1f} ms, "
          f"fastest {min(steps) * 1000:.1f} ms, slowest {max(steps) * 1000:.1f} ms; "
          "run means " + ", ".join(f"{t * 1000:.1f} ms" for t in means))
    print(f"one pass over the data, 15 times between them: median {median(passes) * 1000:.1f} ms, "
          f"fastest {min(passes) * 1000:.1f} ms, slowest {max(passes) * 1000:.1f} ms")
    rows.append(("kmeans iteration 1Mx50 k=8", sk_iter, median(means), "inertia", sk_inertia, runs[0]["train:inertia"]))
    one_pass = median(passes)
    rate = 2 * 2048**3 / median(matmuls)
    arithmetic = 2 * n * d * k / rate
    return rows, (max(one_pass, arithmetic), one_pass, rate, arithmetic, median(steps))


def bench_pca(binary, work, data):
    rng = np.random.default_rng(SEED)
    # PCA: 1M x 50, 10 components, full.
    d = 50
    x, _ = make_blobs(n_samples=1_000_000, n_features=d, centers=8, cluster_std=8.0, random_state=SEED)
    xp = (x.astype(np.float32) @ rng.standard_normal((d, d)).astype(np.float32)).astype(np.float32)
    write_parquet(f"{data}/pca", xp)
    pca = PCA(n_components=10, svd_solver="full")
    sk = best_of(lambda: pca.fit(xp), 1)
    m = kiln(binary, work, "pca", "pca", {"num_components": 10}, {"train": f"{data}/pca"})
    return [("pca 1Mx50 -> 10", sk, m["train:fit_seconds"], "explained", pca.explained_variance_ratio_.sum(), m["train:explained_variance_ratio"])]


def bench_linreg(binary, work, data):

    # Linear regression: 1M x 50.
    xr, yr = make_regression(n_samples=1_000_000, n_features=50, noise=10.0, random_state=SEED)
    xr, yr = xr.astype(np.float32), yr.astype(np.float32)
    split = 900_000
    write_parquet(f"{data}/linreg/train", xr[:split], yr[:split])
    write_parquet(f"{data}/linreg/test", xr[split:], yr[split:])
    lr = LinearRegression()
    sk = best_of(lambda: lr.fit(xr[:split], yr[:split]), 1)
    m = kiln(binary, work, "linreg", "linear-learner", {"predictor_type": "regressor", "solver": "normal_equations"},
             {"train": f"{data}/linreg/train", "test": f"{data}/linreg/test"})
    return [("linear regression 0.9Mx50", sk, m["train:fit_seconds"], "r2", lr.score(xr[split:], yr[split:]), m["test:r2"])]


def bench_logreg(binary, work, data):

    # Logistic regression: 200k x 50 binary.
    xc, yc = make_classification(n_samples=220_000, n_features=50, n_informative=20, random_state=SEED)
    xc = xc.astype(np.float32)
    split = 200_000
    write_parquet(f"{data}/logreg/train", xc[:split], yc[:split])
    write_parquet(f"{data}/logreg/test", xc[split:], yc[split:])
    lg = LogisticRegression(max_iter=1000)
    sk = best_of(lambda: lg.fit(xc[:split], yc[:split]), 1)
    m = kiln(binary, work, "logreg", "linear-learner",
             {"predictor_type": "binary_classifier", "epochs": 3, "mini_batch_size": 1024, "learning_rate": 0.01},
             {"train": f"{data}/logreg/train", "test": f"{data}/logreg/test"})
    return [("logistic regression 200kx50", sk, m["train:fit_seconds"], "accuracy", lg.score(xc[split:], yc[split:]), m["test:accuracy"])]


def bench_knn(binary, work, data):

    # kNN: 100k x 50 stored, 10k queries, k = 5.
    xk, yk = make_classification(n_samples=110_000, n_features=50, n_informative=10, n_classes=4, random_state=SEED)
    xk = xk.astype(np.float32)
    split = 100_000
    write_parquet(f"{data}/knn/train", xk[:split], yk[:split])
    write_parquet(f"{data}/knn/test", xk[split:], yk[split:])
    kn = KNeighborsClassifier(n_neighbors=5)
    acc = {}
    sk = best_of(lambda: acc.update(v=kn.fit(xk[:split], yk[:split]).score(xk[split:], yk[split:])), 1)
    m = kiln(binary, work, "knn", "knn", {"k": 5, "predictor_type": "classifier", "num_classes": 4},
             {"train": f"{data}/knn/train", "test": f"{data}/knn/test"})
    return [("knn 100kx50, 10k queries", sk, m["train:fit_seconds"], "accuracy", acc["v"], m["test:accuracy"])]


BENCHES = {"kmeans": bench_kmeans, "pca": bench_pca, "linreg": bench_linreg, "logreg": bench_logreg, "knn": bench_knn}


def main(binary, work, only=""):
    names = [n for n in only.split(",") if n] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}: pick from {', '.join(BENCHES)}")
    data = os.path.join(work, "data")
    rows, limit = [], None
    for name in names:
        if name == "kmeans":
            kmeans_rows, limit = bench_kmeans(binary, work, data)
            rows += kmeans_rows
        else:
            rows += BENCHES[name](binary, work, data)

    print(f"\n{'benchmark':<30} {'scikit-learn s':>15} {'kiln s':>10} {'ratio':>7}   quality (scikit-learn / kiln)")
    for name, sk, kl, qname, qs, qk in rows:
        print(f"{name:<30} {sk:>15.4f} {kl:>10.4f} {sk / kl:>6.2f}x   {qname} {qs:.4f} / {qk:.4f}")
    if limit is None:
        return
    limit, one_pass, rate, arithmetic, kiln_iter = limit
    print(
        f"\nk-means iteration limit of this machine (medians): {limit * 1000:.1f} ms "
        f"(one pass {one_pass * 1000:.1f} ms; distances {arithmetic * 1000:.1f} ms at {rate / 1e9:.0f} GFLOP/s); "
        f"kiln's median iteration {kiln_iter * 1000:.1f} ms = {kiln_iter / limit:.2f}x the limit, goal <= 1.5x"
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
