#!/usr/bin/env python3
"""Runs the Argo CD health checks of the Kiln kinds with a real Lua 5.1.

For every kiln.dev kind (the kinds of charts/kiln/crds/*.yaml) the folder
charts/kiln/argocd/resource_customizations/kiln.dev/<Kind>/ must hold
health.lua, health_test.yaml in Argo CD's format and the testdata objects it
names. Each test case's object is turned into a Lua table literal and the
kind's health.lua runs on it under lua5.1, in the sandbox Argo CD gives
scripts from argocd-cm (base functions, table and a safe os; no string or
math library, no string methods), with the object as the global `obj`. The
returned status and message must equal the case's healthStatus.

Beside the cases it checks what would break in Argo CD without failing a
case: every line of every script runs in some case (a line hook counts
them), the helpers between `kiln:common begin` and `kiln:common end` are the
same in every script, every kind has at least 4 cases, every testdata file
is used. Prints one line per case and a closing count; exits 1 when anything
failed.

    argocd_health.py [--lua lua5.1] [--luac luac5.1] [--chart charts/kiln]
"""

import argparse
import difflib
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
MIN_CASES = 4
COMMON_BEGIN = "-- kiln:common begin"
COMMON_END = "-- kiln:common end"

# Runs one health.lua as Argo CD does (util/lua/lua.go): the libraries it
# opens for a script from argocd-cm are package, base, table and a safe os,
# so string.*, math.*, io.* and ("x"):method() are errors there and here.
# arg: the script, the object (a Lua file returning a table), the file the
# covered line numbers go to. Prints the status, a newline and the message.
WRAPPER = r"""
local script_path, object_path, coverage_path = arg[1], arg[2], arg[3]
local write, exit, open = io.write, os.exit, io.open
local stderr = io.stderr
local sethook, getinfo, getmetatable_ = debug.sethook, debug.getinfo, debug.getmetatable

local object = assert(loadfile(object_path))()
local chunk, err = loadfile(script_path)
if chunk == nil then
  stderr:write("does not compile: ", err, "\n")
  exit(3)
end

local env = {}
for _, name in ipairs({"assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
                       "print", "rawequal", "rawget", "rawset", "select", "setmetatable",
                       "tonumber", "tostring", "type", "unpack", "xpcall", "_VERSION"}) do
  env[name] = _G[name]
end
env.table = {concat = table.concat, insert = table.insert, maxn = table.maxn,
             remove = table.remove, sort = table.sort, getn = table.getn}
env.os = {time = os.time, date = os.date, clock = os.clock, difftime = os.difftime}
env._G = env
env.obj = object
setfenv(chunk, env)
getmetatable_("").__index = nil

local lines = {}
local source = "@" .. script_path
sethook(function(_, line)
  if getinfo(2, "S").source == source then
    lines[line] = true
  end
end, "l")
local ok, result = pcall(chunk)
sethook()

local cov = assert(open(coverage_path, "w"))
for line in pairs(lines) do
  cov:write(tostring(line), "\n")
end
cov:close()

if not ok then
  stderr:write("error: ", tostring(result), "\n")
  exit(3)
end
if type(result) ~= "table" then
  stderr:write("returned a ", type(result), ", not a table\n")
  exit(3)
end
if type(result.status) ~= "string" or (result.message ~= nil and type(result.message) ~= "string") then
  stderr:write("status must be a string and message a string or nil\n")
  exit(3)
end
write(result.status, "\n", result.message or "")
"""


class YamlLoader(yaml.SafeLoader):
    """Kubernetes reads timestamps as strings, and so does Argo CD's obj."""


YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def lua_string(s):
    out = ['"']
    for ch in s.encode("utf-8"):
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append(f"\\{ch:03d}")
    out.append('"')
    return "".join(out)


def to_lua(value, path="obj"):
    """A Lua table literal of a decoded YAML value, as Argo CD's decodeValue
    builds it: maps and lists become tables, null fields are absent."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{path}: {value} has no JSON form")
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, dict):
        fields = [f"[{lua_string(str(k))}] = {to_lua(v, f'{path}.{k}')}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(fields) + "}"
    if isinstance(value, list):
        if any(v is None for v in value):
            raise ValueError(f"{path}: a null in a list has no place in a Lua table")
        return "{" + ", ".join(to_lua(v, f"{path}[{i}]") for i, v in enumerate(value)) + "}"
    raise ValueError(f"{path}: cannot turn {type(value).__name__} into Lua")


def crd_kinds(chart):
    kinds = set()
    for crd in sorted((chart / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(crd.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["group"] == "kiln.dev":
                kinds.add(doc["spec"]["names"]["kind"])
    return kinds


def executable_lines(luac, script):
    """Lines that hold instructions (luac -l), less the implicit `return` at
    the end of a function or of the chunk, which an early return skips, and
    the loop-back jump of a generic for."""
    listing = subprocess.run([luac, "-l", "-l", "-p", str(script)], capture_output=True, text=True)
    if listing.returncode != 0:
        raise RuntimeError(listing.stderr.strip())
    ops = {}
    previous = None
    for m in re.finditer(r"^\s*\d+\s+\[(\d+)\]\s+(\w+)\s*([^;\n]*)", listing.stdout, re.M):
        op = m.group(2)
        # Lua 5.1's TFORLOOP does the jump that follows it itself: the JMP
        # on a generic for's `end` line never runs as an instruction.
        if not (op == "JMP" and previous == "TFORLOOP"):
            ops.setdefault(int(m.group(1)), []).append((op, m.group(3).split()))
        previous = op
    return {line for line, instrs in ops.items() if not all(op == "RETURN" and args == ["0", "1"] for op, args in instrs)}


def common_block(text):
    if COMMON_BEGIN not in text or COMMON_END not in text:
        return None
    return text[text.index(COMMON_BEGIN):text.index(COMMON_END)]


class Run:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok    {what}")

    def fail(self, what, detail=""):
        self.failed += 1
        print(f"FAIL  {what}")
        for line in detail.rstrip("\n").splitlines():
            print(f"      {line}")


def run_case(lua, wrapper, script, obj, work):
    object_file = work / "object.lua"
    coverage_file = work / "coverage"
    object_file.write_text("return " + to_lua(obj) + "\n")
    if coverage_file.exists():
        coverage_file.unlink()
    proc = subprocess.run([lua, str(wrapper), str(script), str(object_file), str(coverage_file)],
                          capture_output=True, text=True, timeout=10)
    covered = set()
    if coverage_file.exists():
        covered = {int(n) for n in coverage_file.read_text().split()}
    if proc.returncode != 0:
        return None, (proc.stderr or proc.stdout).strip(), covered
    status, _, message = proc.stdout.partition("\n")
    return (status, message), None, covered


def check_kind(run, kind, folder, lua, luac, wrapper, work):
    script = folder / "health.lua"
    tests_file = folder / "health_test.yaml"
    for path in (script, tests_file):
        if not path.is_file():
            run.fail(f"{kind}: {path} exists")
            return None
    try:
        tests = (yaml.safe_load(tests_file.read_text()) or {}).get("tests") or []
    except yaml.YAMLError as e:
        run.fail(f"{kind}: {tests_file} parses", str(e))
        return None
    if len(tests) < MIN_CASES:
        run.fail(f"{kind}: at least {MIN_CASES} cases in {tests_file}", f"it has {len(tests)}")
    covered = set()
    used = set()
    for i, test in enumerate(tests, 1):
        expected = (test or {}).get("healthStatus") or {}
        input_path = (test or {}).get("inputPath")
        what = f"{kind} case {i} ({input_path})"
        if set(test or {}) != {"healthStatus", "inputPath"} or set(expected) != {"status", "message"}:
            run.fail(what, f"{tests_file}: a case is {{healthStatus: {{status, message}}, inputPath}}, got {test!r}")
            continue
        if expected["status"] not in HEALTH_STATUSES:
            run.fail(what, f"{tests_file}: {expected['status']!r} is not an Argo CD health status")
            continue
        data_file = folder / input_path
        if not data_file.is_file():
            run.fail(what, f"{tests_file}: {data_file} does not exist")
            continue
        used.add(data_file.resolve())
        try:
            obj = yaml.load(data_file.read_text(), Loader=YamlLoader)
            if obj.get("apiVersion") != "kiln.dev/v1alpha1" or obj.get("kind") != kind:
                raise ValueError(f"it is a {obj.get('apiVersion')} {obj.get('kind')}, not a kiln.dev/v1alpha1 {kind}")
            result, error, lines = run_case(lua, wrapper, script, obj, work)
        except (ValueError, yaml.YAMLError, AttributeError) as e:
            run.fail(what, f"{data_file}: {e}")
            continue
        covered |= lines
        want = (expected["status"], str(expected["message"]))
        if error is not None:
            run.fail(what, f"{script} failed on {data_file}:\n{error}")
        elif result != want:
            diff = difflib.unified_diff(
                [f"status: {want[0]}", f"message: {want[1]}"], [f"status: {result[0]}", f"message: {result[1]}"],
                fromfile=f"{tests_file} case {i} (expected)", tofile=f"{script} on {input_path}", lineterm="")
            run.fail(what, "\n".join(diff))
        else:
            run.ok(f"{what}: {want[0]}")
    for unused in sorted(p for p in (folder / "testdata").glob("*") if p.resolve() not in used):
        run.fail(f"{kind}: {unused} is used by a case")
    try:
        lines = executable_lines(luac, script)
    except RuntimeError as e:
        run.fail(f"{kind}: {script} compiles with Lua 5.1", str(e))
        return None
    source = script.read_text().splitlines()
    missed = sorted(lines - covered)
    if missed:
        run.fail(f"{kind}: every line of {script} runs in some case",
                 "\n".join(f"line {n} never ran: {source[n - 1].strip()}" for n in missed))
    else:
        run.ok(f"{kind}: all {len(lines)} lines of health.lua ran in the {len(tests)} cases")
    return common_block(script.read_text())


def main():
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lua", default="lua5.1")
    parser.add_argument("--luac", default="luac5.1")
    parser.add_argument("--chart", type=Path, default=here.parent / "kiln")
    args = parser.parse_args()

    run = Run()
    root = args.chart / "argocd" / "resource_customizations" / "kiln.dev"
    kinds = crd_kinds(args.chart)
    if not kinds:
        run.fail(f"{args.chart}/crds holds kiln.dev CRDs")
    folders = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    for kind in sorted(kinds - folders):
        run.fail(f"{kind}: has a health check folder", f"{root / kind} does not exist")
    for extra in sorted(folders - kinds):
        run.fail(f"{extra}: is a kiln.dev kind", f"{root / extra} has no CRD in {args.chart}/crds")

    commons = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wrapper = work / "wrapper.lua"
        wrapper.write_text(WRAPPER)
        for kind in sorted(kinds & folders):
            commons[kind] = check_kind(run, kind, root / kind, args.lua, args.luac, wrapper, work)

    blocks = {k: v for k, v in commons.items() if v is not None}
    missing = sorted(k for k in kinds & folders if k in commons and commons[k] is None)
    reference = blocks.get("TrainingJob") or next(iter(blocks.values()), None)
    differing = sorted(k for k, v in blocks.items() if v != reference)
    if missing or differing:
        detail = [f"{k}/health.lua lacks the {COMMON_BEGIN} ... {COMMON_END} block" for k in missing]
        for k in differing:
            detail += list(difflib.unified_diff(reference.splitlines(), blocks[k].splitlines(),
                                                "TrainingJob/health.lua", f"{k}/health.lua", lineterm=""))
        run.fail("the common helpers are the same in every health.lua", "\n".join(detail))
    elif blocks:
        run.ok(f"the common helpers are the same in all {len(blocks)} health.lua")

    print(f"argocd health: {run.passed} passed, {run.failed} failed")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
