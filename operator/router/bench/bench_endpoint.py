"""The traffic router's own cost: kiln-runtime serve straight, and through kiln-router.

One `kiln-runtime serve` process answers an iris-like linear-learner model
(trained here by `kiln-runtime train linear-learner` on a generated
150-row CSV); one `kiln-router` has one variant pointing at it. wrk sends
the same load (POST /invocations, one CSV row, text/csv, fixed threads,
connections and duration) (a) straight to serve and (b) through the
router, alternating a/b for several rounds after a warm-up. Then the router
with data capture on (every request, to a file:// folder) and with a shadow
variant (a second serve process, every request copied) alternate with the
plain router for a few rounds more, and so does a second router that
differs only by running one worker thread (TOKIO_WORKER_THREADS=1; the
runtime's default is one per CPU). Each configuration is applied the way
the operator applies it: the router's file is rewritten and the router
picks it up live (`GET /config` shows the revision).

Prints, per case, requests/s and p50/p99 latency (median over rounds, with
min..max), the CPU time each process spent per request, then the router's
throughput as a share of direct and the latency it adds. Timings never fail:
client, router and servers share the machine's CPUs.

    python3 bench_endpoint.py KILN_RUNTIME KILN_ROUTER WORKDIR

Environment: BENCH_CONNECTIONS (16), BENCH_THREADS (2), BENCH_SECONDS (10),
BENCH_ROUNDS (5), BENCH_EXTRA_ROUNDS (2), BENCH_WARMUP_SECONDS (3).
Python standard library only.
"""

import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
THREADS = min(int(os.environ.get("BENCH_THREADS", "2")), CONNECTIONS)
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
EXTRA_ROUNDS = int(os.environ.get("BENCH_EXTRA_ROUNDS", "2"))
WARMUP = int(os.environ.get("BENCH_WARMUP_SECONDS", "3"))
ROW = "5.1,3.5,1.4,0.2"
ENDPOINT = "bench"
TICK = os.sysconf("SC_CLK_TCK")

# Iris's per-class means and standard deviations (sepal length, sepal width,
# petal length, petal width): the generated rows look like iris to the model.
IRIS = [
    ([5.006, 3.428, 1.462, 0.246], [0.352, 0.379, 0.174, 0.105]),
    ([5.936, 2.770, 4.260, 1.326], [0.516, 0.314, 0.470, 0.198]),
    ([6.588, 2.974, 5.552, 2.026], [0.636, 0.322, 0.552, 0.275]),
]


def log(msg):
    print(f"[bench-endpoint] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_http(url, proc, seconds=120):
    start = time.time()
    while time.time() - start < seconds:
        if proc.poll() is not None:
            raise SystemExit(f"a process exited early ({proc.returncode}) before {url} answered")
        try:
            get(url, timeout=1)
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def post(url, body, content_type="text/csv"):
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read(), dict(r.headers)


def train(kiln, work):
    """A multiclass linear-learner model on 150 iris-like rows (label first)."""
    ml = os.path.join(work, "ml")
    shutil.rmtree(ml, ignore_errors=True)
    os.makedirs(f"{ml}/input/data/train")
    os.makedirs(f"{ml}/input/config")
    rng = random.Random(0)
    with open(f"{ml}/input/data/train/iris.csv", "w") as f:
        for label, (means, sds) in enumerate(IRIS):
            for _ in range(50):
                row = [max(0.1, rng.gauss(m, s)) for m, s in zip(means, sds)]
                f.write(",".join([str(label)] + [f"{v:.1f}" for v in row]) + "\n")
    with open(f"{ml}/input/config/hyperparameters.json", "w") as f:
        json.dump({"predictor_type": "multiclass_classifier", "num_classes": "3", "epochs": "50"}, f)
    subprocess.run(
        [kiln, "train", "--algorithm", "linear-learner", "--device", "cpu", "--ml-root", ml],
        check=True, stdout=subprocess.DEVNULL,
    )
    return f"{ml}/model"


def start(cmd, **extra_env):
    env = dict(os.environ, RUST_LOG="warn", **extra_env)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cpu_seconds(pid):
    """User and system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def metrics(admin):
    """The router's counters, {name{labels}: value}."""
    out = {}
    for line in get(f"http://127.0.0.1:{admin}/metrics").decode().splitlines():
        if line.startswith("kiln_router_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric(values, prefix, **labels):
    """The sum of the series of `prefix` whose labels include `labels`."""
    total = 0.0
    for name, v in values.items():
        if name.split("{")[0] == prefix and all(f'{k}="{l}"' in name for k, l in labels.items()):
            total += v
    return total


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "requests": requests,
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket": sock.group(1) if sock else ""}


class Bench:
    def __init__(self, work, pids):
        self.script = os.path.join(work, "invocations.lua")
        with open(self.script, "w") as f:
            f.write('wrk.method = "POST"\n'
                    f'wrk.body = "{ROW}"\n'
                    'wrk.headers["Content-Type"] = "text/csv"\n')
        self.pids = pids  # {"serve": pid, "router": pid, "shadow": pid}

    def wrk(self, url, seconds):
        cmd = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
               "-s", self.script, url]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def run(self, name, url, seconds=SECONDS):
        """One round: wrk's figures and the CPU microseconds per request of
        each process (wrk included)."""
        before = {k: cpu_seconds(p) for k, p in self.pids.items()}
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = self.wrk(url, seconds)
        kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = {k: cpu_seconds(p) for k, p in self.pids.items()}
        r = parse_wrk(out)
        n = max(r["requests"], 1)
        r["cpu_us"] = {k: (after[k] - before[k]) / n * 1e6 for k in self.pids}
        r["cpu_us"]["wrk"] = ((kids_after.ru_utime - kids.ru_utime)
                              + (kids_after.ru_stime - kids.ru_stime)) / n * 1e6
        if r["non2xx"] or r["socket"]:
            log(f"{name}: {r['non2xx']} non-2xx responses, socket errors: {r['socket']}")
        log(f"{name}: {r['rps']:.0f} req/s, p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms")
        return r


class Router:
    """The router's configuration file, rewritten like the operator's ConfigMap."""

    def __init__(self, path, serve_url):
        self.path = path
        self.serve_url = serve_url
        self.revision = 0
        self.admin = None

    def write(self, shadow_url=None, capture_dir=None):
        self.revision += 1
        config = {
            "endpoint": ENDPOINT, "revision": self.revision, "requestTimeoutSeconds": 60,
            "variants": [{"name": "blue", "url": self.serve_url, "weight": 1}],
        }
        if shadow_url:
            config["shadows"] = [{"name": "candidate", "url": shadow_url, "samplingPercent": 100}]
        if capture_dir:
            config["dataCapture"] = {
                "samplingPercent": 100, "destination": f"file://{capture_dir}",
                "captureInput": True, "captureOutput": True,
                "maxBatchRecords": 1000, "flushSeconds": 10,
            }
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f)
        os.replace(tmp, self.path)
        if self.admin is None:
            return
        deadline = time.time() + 30
        while time.time() < deadline:
            applied = json.loads(get(f"http://127.0.0.1:{self.admin}/config"))
            if applied.get("revision") == self.revision:
                return
            time.sleep(0.1)
        raise SystemExit(f"the router did not apply revision {self.revision}")


def spread(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def du(path):
    files, size = 0, 0
    for root, _, names in os.walk(path):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(root, n))
    return files, size


def main():
    kiln, router_bin, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    load_before = os.getloadavg()
    log("training an iris-like linear-learner model")
    model = train(kiln, work)

    serve_port, shadow_port, router_port, admin_port, one_port, one_admin = (
        free_port() for _ in range(6))
    serve_url, shadow_url = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{shadow_port}"
    router = Router(os.path.join(work, "router.json"), serve_url)
    router.write()
    capture_dir = tempfile.mkdtemp(prefix="kiln-capture-")
    procs = []
    results = {"direct": [], "router": [], "router (plain, beside the extras)": [],
               "router + capture": [], "router + shadow": [], "router, 1 worker thread": []}
    counters = {}
    try:
        for port in (serve_port, shadow_port):
            procs.append(start([kiln, "serve", "--address", "127.0.0.1", "--port", str(port),
                                "--no-grpc", "--device", "cpu", "--model", model,
                                "--model-name", "iris"]))
            wait_http(f"http://127.0.0.1:{port}/ping", procs[-1])
        procs.append(start([router_bin, "--config", router.path, "--address", "127.0.0.1",
                            "--port", str(router_port), "--admin-port", str(admin_port)]))
        wait_http(f"http://127.0.0.1:{admin_port}/healthz", procs[-1])
        router.admin = admin_port
        # The same router with one worker thread, idle but in its own rounds.
        one_config = os.path.join(work, "router-one.json")
        shutil.copy(router.path, one_config)
        procs.append(start([router_bin, "--config", one_config, "--address", "127.0.0.1",
                            "--port", str(one_port), "--admin-port", str(one_admin)],
                           TOKIO_WORKER_THREADS="1"))
        wait_http(f"http://127.0.0.1:{one_admin}/healthz", procs[-1])
        pids = {"serve": procs[0].pid, "router": procs[2].pid, "shadow": procs[1].pid,
                "router-1": procs[3].pid}
        bench = Bench(work, pids)

        direct_url = f"{serve_url}/invocations"
        routed_url = f"http://127.0.0.1:{router_port}/invocations"
        one_url = f"http://127.0.0.1:{one_port}/invocations"
        direct, _ = post(direct_url, ROW)
        routed, headers = post(routed_url, ROW)
        log(f"serve answers {direct.decode().strip()!r}; through the router "
            f"{routed.decode().strip()!r} from variant {headers.get('x-amzn-invoked-production-variant')}")
        assert direct == routed, "the router changed the answer"

        log(f"warm-up: {WARMUP} s each side")
        bench.wrk(direct_url, WARMUP)
        bench.wrk(routed_url, WARMUP)
        for i in range(ROUNDS):
            # Alternate which side goes first, so that a trend of the
            # machine's load does not favour one side.
            order = [("direct", direct_url), ("router", routed_url)]
            for name, url in order if i % 2 == 0 else order[::-1]:
                results[name].append(bench.run(f"round {i + 1}/{ROUNDS} {name}", url))

        if EXTRA_ROUNDS:
            m0 = metrics(admin_port)
            for i in range(EXTRA_ROUNDS):
                router.write()
                results["router (plain, beside the extras)"].append(
                    bench.run(f"extra {i + 1}/{EXTRA_ROUNDS} router", routed_url))
                router.write(capture_dir=capture_dir)
                results["router + capture"].append(
                    bench.run(f"extra {i + 1}/{EXTRA_ROUNDS} router + capture", routed_url))
                router.write(shadow_url=shadow_url)
                results["router + shadow"].append(
                    bench.run(f"extra {i + 1}/{EXTRA_ROUNDS} router + shadow", routed_url))
                results["router, 1 worker thread"].append(
                    bench.run(f"extra {i + 1}/{EXTRA_ROUNDS} router, 1 worker thread", one_url))
            router.write()
            m1 = metrics(admin_port)
            for key, prefix, labels in [
                ("shadow sent", "kiln_router_shadow_requests_total", {"outcome": "sent"}),
                ("shadow dropped", "kiln_router_shadow_requests_total", {"outcome": "dropped"}),
                ("shadow error", "kiln_router_shadow_requests_total", {"outcome": "error"}),
                ("capture written", "kiln_router_capture_records_total", {"outcome": "written"}),
                ("capture dropped", "kiln_router_capture_records_total", {"outcome": "dropped"}),
                ("capture failed", "kiln_router_capture_records_total", {"outcome": "failed"}),
            ]:
                counters[key] = metric(m1, prefix, **labels) - metric(m0, prefix, **labels)
    finally:
        for p in reversed(procs):  # the routers first: one writes what capture holds
            stop(p)
        counters["capture files"], counters["capture bytes"] = du(capture_dir)
        shutil.rmtree(capture_dir, ignore_errors=True)

    report(results, counters, load_before)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({"results": results, "counters": counters}, f, indent=1)


def report(results, counters, load_before):
    cores = os.cpu_count()
    print()
    print("kiln-router in front of kiln-runtime serve: iris-like linear-learner, "
          "POST /invocations, one CSV row (text/csv)")
    print(f"wrk {THREADS} threads, {CONNECTIONS} connections, {SECONDS} s per round; "
          f"{ROUNDS} rounds direct/router alternating after {WARMUP} s warm-up each, "
          f"then {EXTRA_ROUNDS} rounds of router / + capture / + shadow / 1 worker thread")
    print(f"{cores} CPUs, shared by wrk, the router and serve (and the shadow's serve): "
          f"serve and the router each run one thread per CPU, none pinned; "
          f"load average before: {load_before[0]:.2f}")
    print("figures: median over rounds (min..max)")
    print()
    print(f"{'case':<36} {'req/s':>22} {'p50 ms':>22} {'p99 ms':>22}   CPU us/request (median)")
    for name, rounds in results.items():
        if not rounds:
            continue
        cpu = {k: statistics.median(r["cpu_us"][k] for r in rounds) for k in rounds[0]["cpu_us"]}
        shown = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if v >= 0.05)
        print(f"{name:<36} {spread([r['rps'] for r in rounds], '{:.0f}'):>22} "
              f"{spread([r['p50'] for r in rounds], '{:.3f}'):>22} "
              f"{spread([r['p99'] for r in rounds], '{:.3f}'):>22}   {shown}")
    d, r = results["direct"], results["router"]
    med = lambda rounds, k: statistics.median(x[k] for x in rounds)  # noqa: E731
    share = [b["rps"] / a["rps"] * 100 for a, b in zip(d, r)]
    p99 = [b["p99"] - a["p99"] for a, b in zip(d, r)]
    p50 = [b["p50"] - a["p50"] for a, b in zip(d, r)]
    print()
    print(f"router throughput: {med(r, 'rps') / med(d, 'rps') * 100:.0f}% of direct "
          f"(goal >= 80%); per round {min(share):.0f}..{max(share):.0f}%")
    print(f"p99 the router adds: {med(r, 'p99') - med(d, 'p99'):+.3f} ms (goal < 1 ms); "
          f"per round {min(p99):+.3f}..{max(p99):+.3f} ms")
    print(f"p50 the router adds: {med(r, 'p50') - med(d, 'p50'):+.3f} ms; "
          f"per round {min(p50):+.3f}..{max(p50):+.3f} ms")
    plain = results["router (plain, beside the extras)"]
    if plain:
        for name, what in (("router + capture", "data capture (100%, file://)"),
                           ("router + shadow", "a shadow (100%, a second serve)")):
            x = results[name]
            print(f"{what}: {med(x, 'rps') / med(plain, 'rps') * 100:.0f}% of the plain router's "
                  f"throughput, p99 {med(x, 'p99') - med(plain, 'p99'):+.3f} ms")
        one = results["router, 1 worker thread"]
        print(f"the router with 1 worker thread: {med(one, 'rps') / med(plain, 'rps') * 100:.0f}% "
              f"of the default router's throughput ({med(one, 'rps') / med(d, 'rps') * 100:.0f}% of "
              f"direct), p99 {med(one, 'p99') - med(plain, 'p99'):+.3f} ms")
        print(f"shadow copies: {counters['shadow sent']:.0f} sent, "
              f"{counters['shadow dropped']:.0f} dropped (64 in flight), "
              f"{counters['shadow error']:.0f} errors")
        print(f"capture records: {counters['capture written']:.0f} written "
              f"({counters['capture files']} files, {counters['capture bytes'] / 2**20:.1f} MiB after "
              f"the router stopped), {counters['capture dropped']:.0f} dropped (queue full), "
              f"{counters['capture failed']:.0f} failed")


if __name__ == "__main__":
    main()
