"""kiln-runtime serve against MLServer and the machine's bare HTTP limit.

The same model (a softmax/logistic regression on iris) is served by Kiln
(trained by `kiln-runtime train linear-learner`) and by MLServer's
scikit-learn runtime (trained by scikit-learn); both get the same Open
Inference Protocol request from wrk at several concurrencies. The bare
limit is a hyper server answering a fixed body of the size of Kiln's
response without parsing anything, under the same load. Prints
throughput, p50 and p99 latency per server, and the ratios.

    python bench_serve.py KILN_RUNTIME BARE_HTTP WORKDIR

Runs in the MLServer environment (images/runtime/python-env.sh mlserver).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,16,64,128").split(",")]
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ROW = [5.1, 3.5, 1.4, 0.2]
REQUEST = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
)


def log(msg):
    print(f"[bench-serve] {msg}", file=sys.stderr, flush=True)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, seconds=120):
    start = time.time()
    while time.time() - start < seconds:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode}) for {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def post(url, body, content_type="application/json"):
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def train(kiln, work):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    import joblib

    x, y = load_iris(return_X_y=True)
    ml = os.path.join(work, "kiln-ml")
    shutil.rmtree(ml, ignore_errors=True)
    os.makedirs(f"{ml}/input/data/train")
    os.makedirs(f"{ml}/input/config")
    with open(f"{ml}/input/data/train/iris.csv", "w") as f:
        for xi, yi in zip(x, y):
            f.write(",".join([str(int(yi))] + [str(v) for v in xi]) + "\n")
    with open(f"{ml}/input/config/hyperparameters.json", "w") as f:
        json.dump({"predictor_type": "multiclass_classifier", "num_classes": "3", "epochs": "50"}, f)
    subprocess.run(
        [kiln, "train", "--algorithm", "linear-learner", "--device", "cpu", "--ml-root", ml],
        check=True, stdout=subprocess.DEVNULL,
    )
    repo = os.path.join(work, "mlserver-models")
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(f"{repo}/iris")
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), f"{repo}/iris/model.joblib")
    with open(f"{repo}/iris/model-settings.json", "w") as f:
        json.dump({"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
                   "parameters": {"uri": "./model.joblib", "version": "v1"}}, f)
    return f"{ml}/model", repo


def start(cmd, env=None, cwd=None):
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, cwd=cwd, start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"],
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket": sock.group(1) if sock else ""}


def load(url, body, content_type, conns, work, seconds=SECONDS):
    script = os.path.join(work, "post.lua")
    with open(script, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                f'wrk.headers["Content-Type"] = "{content_type}"\n')
    threads = min(2, conns)
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", script, url]
    subprocess.run(cmd[:3] + [f"-c{conns}", "-d1s", "-s", script, url],
                   check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = parse_wrk(out)
    if r["non2xx"] or r["socket"]:
        log(f"{url} c={conns}: {r['non2xx']} non-2xx responses, socket errors: {r['socket']}")
    return r


def main():
    kiln, bare, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    log("training the iris models (Kiln linear-learner, scikit-learn LogisticRegression)")
    kiln_model, repo = train(kiln, work)

    servers = {}
    kiln_port, ml_port, bare_port = free_port(), free_port(), free_port()
    procs = []
    try:
        env = dict(os.environ, RUST_LOG="warn")
        procs.append(start([kiln, "serve", "--address", "127.0.0.1", "--port", str(kiln_port),
                            "--grpc-port", str(free_port()), "--device", "cpu", "--model", kiln_model, "--model-name", "iris"], env=env))
        wait_http(f"http://127.0.0.1:{kiln_port}/ping", procs[-1])
        kiln_url = f"http://127.0.0.1:{kiln_port}/v2/models/iris/infer"
        kiln_reply = post(kiln_url, REQUEST)
        log(f"Kiln answers {kiln_reply.decode()}")

        settings = {"http_port": ml_port, "grpc_port": free_port(), "metrics_port": free_port(),
                    "debug": False}
        with open(os.path.join(repo, "settings.json"), "w") as f:
            json.dump(settings, f)
        mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
        procs.append(start([mlserver, "start", repo], cwd=repo))
        wait_http(f"http://127.0.0.1:{ml_port}/v2/models/iris/ready", procs[-1])
        ml_url = f"http://127.0.0.1:{ml_port}/v2/models/iris/infer"
        ml_reply = json.loads(post(ml_url, REQUEST))
        log(f"MLServer answers {json.dumps(ml_reply)}")
        assert json.loads(kiln_reply)["outputs"][0]["data"][0] == ml_reply["outputs"][0]["data"][0]

        procs.append(start([bare, str(bare_port), str(len(kiln_reply))]))
        wait_http(f"http://127.0.0.1:{bare_port}/", procs[-1])
        bare_url = f"http://127.0.0.1:{bare_port}/"

        servers = [
            ("Kiln (v2 JSON)", kiln_url, REQUEST, "application/json"),
            ("Kiln (SageMaker CSV)", f"http://127.0.0.1:{kiln_port}/invocations",
             ",".join(map(str, ROW)), "text/csv"),
            ("MLServer (v2 JSON)", ml_url, REQUEST, "application/json"),
            ("bare hyper limit", bare_url, REQUEST, "application/json"),
        ]
        results = {}
        for conns in CONCURRENCY:
            for name, url, body, ct in servers:
                log(f"{name}: {conns} connections, {SECONDS} s")
                results[(name, conns)] = load(url, body, ct, conns, work)
    finally:
        for p in procs:
            stop(p)

    print()
    print(f"iris logistic regression, one row per request, wrk {SECONDS} s per cell, "
          f"{os.cpu_count()} CPUs (server and load generator share them)")
    print(f"{'server':<22} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for conns in CONCURRENCY:
        for name, *_ in servers:
            r = results[(name, conns)]
            print(f"{name:<22} {conns:>5} {r['rps']:>10.0f} {r['p50']:>8.3f} {r['p99']:>8.3f}")
    print()
    print(f"{'conns':>5} {'Kiln/MLServer':>14} {'Kiln/bare':>10} {'Kiln CSV/bare':>14} "
          f"{'MLServer/bare':>14} {'Kiln p99 ms':>12}")
    for conns in CONCURRENCY:
        k = results[("Kiln (v2 JSON)", conns)]
        kc = results[("Kiln (SageMaker CSV)", conns)]
        m = results[("MLServer (v2 JSON)", conns)]
        b = results[("bare hyper limit", conns)]
        print(f"{conns:>5} {k['rps'] / m['rps']:>14.1f} {k['rps'] / b['rps']:>10.2f} "
              f"{kc['rps'] / b['rps']:>14.2f} {m['rps'] / b['rps']:>14.4f} {k['p99']:>12.3f}")
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({f"{n}@{c}": r for (n, c), r in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()
