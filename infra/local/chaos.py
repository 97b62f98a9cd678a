#!/usr/bin/env python3
"""Chaos tests for the local kurz fleet (infra/local/fleet.sh), through its load balancer.

Runs on the fleet's client host (`fleet.sh exec client chaos.py`), so every request stays in
the fleet's namespaces. A load generator of fixed concurrency sends a steady mix of redirects
of hot links (cached everywhere), redirects of cold links (fresh ones that only the store
knows, and older ones) and creates, while each scenario breaks something with fleet.sh:
rolling restart, SIGKILL of an instance, faults between the instances and DynamoDB, a Redis
partition, one instance's clock five minutes ahead. Every scenario is bounded in time and in
requests, asserts behaviour (never speed), prints what it sent and what failed by kind, and the
run ends with a Markdown report (--report). Exit status 1 when any check failed.

Python standard library only.
"""

import argparse
import collections
import datetime
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
FLEET = os.path.join(HERE, "fleet.sh")
REDIRECTS = {301, 302, 307, 308}
KINDS = ("hot", "cold", "create")
# The load generator: a fixed number of threads per kind, each with one request in flight at
# most, so a kind that waits on a stalled store never starves the others. CONCURRENCY bounds
# the requests in flight at any moment.
THREADS = {"hot": 3, "cold": 2, "create": 3}
CONCURRENCY = sum(THREADS.values())
# Pause after each request: about 70 hot and 20 cold redirects and 15 creates a second.
# DynamoDB Local shares two cores with everything else here, and each instance writes one
# click delta per clicked code per flush interval: more load would measure the emulator.
PAUSE_S = {"hot": 0.04, "cold": 0.1, "create": 0.2}
# Safety bounds on one scenario's load; the scenarios end long before either.
MAX_SCENARIO_REQUESTS = 60_000
MAX_SCENARIO_SECONDS = 150
# The instances' click flush interval, as fleet.sh sets it (KURZ__CLICKS__FLUSH_INTERVAL_MS).
FLUSH_INTERVAL_S = 1.0


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def fleet(*args, timeout=90):
    """Runs a fleet.sh command; its own waits are bounded, and this bounds it again."""
    log(f"fleet.sh {' '.join(args)}")
    subprocess.run([FLEET, *args], check=True, timeout=timeout)


def fleet_env():
    out = subprocess.run([FLEET, "env"], check=True, capture_output=True, text=True, timeout=10)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


class Result:
    __slots__ = ("status", "headers", "body", "error", "t_send", "t_recv")

    def __init__(self, status, headers, body, error, t_send, t_recv):
        self.status, self.headers, self.body = status, headers, body
        self.error, self.t_send, self.t_recv = error, t_send, t_recv

    def describe(self):
        if self.error:
            return self.error
        text = str(self.status)
        if self.status == 503:
            text += " Retry-After=" + self.headers.get("retry-after", "none")
        return text

    def json(self):
        return json.loads(self.body)


class Http:
    """One keep-alive connection to one base URL (use one per thread); never retries."""

    def __init__(self, base, timeout=30.0):
        url = urllib.parse.urlsplit(base)
        self.host, self.port, self.timeout = url.hostname, url.port or 80, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if body is not None:
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        t_send = time.time()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            if response.will_close:
                self.close()
            hdrs = {k.lower(): v for k, v in response.getheaders()}
            return Result(response.status, hdrs, data, None, t_send, time.time())
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return Result(None, {}, b"", f"{type(e).__name__}: {e}", t_send, time.time())

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Tally:
    """What one scenario sent and what failed, by kind; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = collections.Counter()
        self.failed = collections.Counter()
        self.failures = []  # (kind, Result, served by)
        self.creates = []  # (code, Result) for every 201
        self.results = []  # (kind, code, Result, served by) for every request
        self.tracked_ok = 0  # 3xx answers to GETs of the scenario's tracked link

    def add(self, kind, result, ok, code=None, tracked=False):
        served = result.headers.get("x-served-by", "-")
        with self.lock:
            self.sent[kind] += 1
            self.results.append((kind, code, result, served))
            if not ok:
                self.failed[kind] += 1
                self.failures.append((kind, result, served))
            if tracked and ok:
                self.tracked_ok += 1
            if kind == "create" and ok:
                self.creates.append((code, result))

    def total(self):
        with self.lock:
            return sum(self.sent.values())

    def summary(self):
        with self.lock:
            return ", ".join(f"{k} {self.sent[k]} sent / {self.failed[k]} failed" for k in KINDS)


class Load:
    """Steady mixed load through the load balancer from CONCURRENCY threads."""

    def __init__(self, lb, hot, cold, tracked, tally):
        self.lb, self.hot, self.cold, self.tracked, self.tally = lb, hot, cold, tracked, tally
        self.fresh = collections.deque(maxlen=2000)  # created by this load, never requested yet
        self.fresh_lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.started = 0.0

    def __enter__(self):
        self.started = time.monotonic()
        for kind, count in THREADS.items():
            target = self.creates if kind == "create" else self.redirects
            for i in range(count):
                thread = threading.Thread(target=target, args=(kind, i), daemon=True)
                self.threads.append(thread)
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=30)

    def running(self):
        return (
            not self.stopping.is_set()
            and self.tally.total() < MAX_SCENARIO_REQUESTS
            and time.monotonic() - self.started < MAX_SCENARIO_SECONDS
        )

    def redirects(self, kind, seed):
        """Hot: the links every instance has cached, and the tracked one. Cold: half links
        created by this load and never requested (only the store knows them), half older ones."""
        rng = random.Random(seed)
        client = Http(self.lb)
        while self.running():
            if kind == "hot":
                code = self.tracked if self.tracked and rng.random() < 0.25 else rng.choice(self.hot)
            else:
                code = None
                if rng.random() < 0.5:
                    with self.fresh_lock:
                        code = self.fresh.popleft() if self.fresh else None
                code = code or rng.choice(self.cold)
            result = client.request("GET", "/" + code)
            ok = result.status in REDIRECTS
            self.tally.add(kind, result, ok, code, tracked=(code == self.tracked))
            time.sleep(PAUSE_S[kind])
        client.close()

    def creates(self, kind, seed):
        client = Http(self.lb)
        while self.running():
            url = f"https://example.com/chaos/{seed}/{uuid.uuid4().hex}"
            result = client.request("POST", "/api/v1/links", {"url": url})
            code = result.json()["code"] if result.status == 201 else None
            self.tally.add("create", result, result.status == 201, code)
            if code:
                with self.fresh_lock:
                    self.fresh.append(code)
            time.sleep(PAUSE_S["create"])
        client.close()


class Scenario:
    def __init__(self, name):
        self.name = name
        self.tally = Tally()
        self.checks = []  # (passed, text)
        self.notes = []
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.duration = 0.0
        self.lb_before = None
        self.lb_delta = {}
        log(f"=== scenario: {name}")

    def check(self, passed, text):
        self.checks.append((bool(passed), text))
        log(f"{'PASS' if passed else 'FAIL'}: {text}")

    def note(self, text):
        self.notes.append(text)
        log(f"note: {text}")

    @property
    def passed(self):
        return all(p for p, _ in self.checks)


class Chaos:
    def __init__(self, env):
        self.env = env
        self.lb = env["KURZ_FLEET_LB"]
        self.instances = {n: env[f"KURZ_FLEET_K{n}"] for n in (1, 2, 3)}
        self.admin = {"Authorization": "Bearer " + env["KURZ_FLEET_ADMIN_TOKEN"]}
        self.hot = []
        self.cold = []
        self.scenarios = []
        self.all_creates = []

    # ------------------------------------------------------------------ helpers

    def once(self, method, path, body=None, headers=None):
        """One request through the load balancer on a connection of its own: a kept-alive one
        could have been closed while idle, and that would be the test's failure, not kurz's."""
        client = Http(self.lb)
        result = client.request(method, path, body, headers)
        client.close()
        return result

    def create(self, client=None, **body):
        body.setdefault("url", f"https://example.com/chaos/setup/{uuid.uuid4().hex}")
        if client is None:
            return self.once("POST", "/api/v1/links", body)
        return client.request("POST", "/api/v1/links", body)

    def create_code(self, client=None, **body):
        result = self.create(client, **body)
        if result.status != 201:
            raise RuntimeError(f"setup create failed: {result.describe()} {result.body[:200]!r}")
        return result.json()["code"]

    def lb_counters(self):
        """HAProxy's backend counters: retries, redispatches, and each instance's downs."""
        url = urllib.parse.urlsplit(self.env["KURZ_FLEET_STATS"])
        client = Http(f"http://{url.netloc}")
        result = client.request("GET", url.path + ";csv")
        client.close()
        if result.status != 200:
            return {}
        lines = result.body.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        counters = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") != "kurz":
                continue
            if row["svname"] == "BACKEND":
                counters["retries"] = int(row.get("wretr") or 0)
                counters["redispatches"] = int(row.get("wredis") or 0)
            elif row["svname"] in ("k1", "k2", "k3"):
                counters[f"{row['svname']} down"] = int(row.get("chkdown") or 0)
        return counters

    def tracked_link(self, sc):
        """A fresh link whose clicks the scenario counts, cached on every instance first."""
        code = self.create_code()
        for base in self.instances.values():
            client = Http(base)
            for _ in range(2):
                result = client.request("GET", "/" + code)
                sc.tally.add("hot", result, result.status in REDIRECTS, code, tracked=True)
            client.close()
        return code

    def clicks_of(self, code):
        result = self.once("GET", f"/api/v1/links/{code}/stats", headers=self.admin)
        return result.json().get("total_clicks") if result.status == 200 else None

    def wait_clicks(self, code, expected, seconds=60):
        """Polls the stats until total_clicks reaches `expected` (clicks are flushed in the
        background) or the deadline passes; returns the last total seen."""
        deadline = time.monotonic() + seconds
        total = None
        while time.monotonic() < deadline:
            total = self.clicks_of(code)
            if total == expected:
                return total
            time.sleep(0.25)
        return total

    def check_clicks(self, sc, code):
        expected = sc.tally.tracked_ok
        total = self.wait_clicks(code, expected)
        sc.check(
            total == expected,
            f"tracked link {code}: total_clicks {total} == {expected} redirects answered 3xx",
        )

    def verify_redirects(self, sc, creates, what):
        """HEAD (no click) through the load balancer for every acknowledged code."""
        codes = [code for code, _ in creates]

        def head(chunk):
            client = Http(self.lb)
            bad = []
            for code in chunk:
                result = client.request("HEAD", "/" + code)
                if result.status not in REDIRECTS:
                    bad.append((code, result.describe()))
            client.close()
            return bad

        chunks = [codes[i::CONCURRENCY] for i in range(CONCURRENCY)]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            bad = [b for part in pool.map(head, chunks) for b in part]
        sc.check(
            not bad,
            f"all {len(codes)} acknowledged creates {what} redirect"
            + (f"; failing: {bad[:10]}" if bad else ""),
        )

    def failures_text(self, sc, limit=8):
        counts = collections.Counter(
            f"{kind} {r.describe()} via {served}" for kind, r, served in sc.tally.failures
        )
        return "; ".join(f"{n}x {what}" for what, n in counts.most_common(limit)) or "none"

    def run(self, name, body):
        sc = Scenario(name)
        sc.lb_before = self.lb_counters()
        try:
            body(sc)
        except Exception as e:  # a scenario that breaks is a failed check, and the run goes on
            sc.check(False, f"scenario raised {type(e).__name__}: {e}")
        sc.duration = time.monotonic() - sc.started
        after = self.lb_counters()
        sc.lb_delta = {k: after.get(k, 0) - sc.lb_before.get(k, 0) for k in after}
        self.all_creates += sc.tally.creates
        log(f"{name}: {sc.tally.summary()}; failures: {self.failures_text(sc)}; "
            f"load balancer: {sc.lb_delta}; {sc.duration:.1f} s")
        self.scenarios.append(sc)
        return sc

    # ------------------------------------------------------------------ scenarios

    def seed(self):
        log("seeding: 10 hot links, 300 cold links; hot links cached on every instance")

        def make(_):
            return self.create_code()

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            self.hot = list(pool.map(make, range(10)))
            self.cold = list(pool.map(make, range(300)))
        for base in self.instances.values():
            client = Http(base)
            for code in self.hot:
                result = client.request("GET", "/" + code)
                if result.status not in REDIRECTS:
                    raise RuntimeError(f"warming {code} on {base}: {result.describe()}")
            client.close()

    def rolling_restart(self, sc):
        tracked = self.tracked_link(sc)
        with Load(self.lb, self.hot, self.cold, tracked, sc.tally):
            time.sleep(3)
            for n in (1, 2, 3):
                fleet("stop", str(n))
                fleet("start", str(n))
                fleet("wait-up", str(n))
                time.sleep(1)
            time.sleep(2)
        sc.check(sum(sc.tally.failed.values()) == 0,
                 f"no failed request during the rolling restart ({self.failures_text(sc)})")
        self.check_clicks(sc, tracked)

    def kill_one(self, sc):
        tracked = self.tracked_link(sc)
        with Load(self.lb, self.hot, self.cold, tracked, sc.tally):
            time.sleep(3)
            fleet("kill", "2")
            killed_at = time.time()
            time.sleep(5)
            fleet("start", "2")
            fleet("wait-up", "2")
            time.sleep(2)
        failed = sum(sc.tally.failed.values())
        sc.check(failed <= CONCURRENCY,
                 f"{failed} failed requests <= {CONCURRENCY} that could be in flight "
                 f"({self.failures_text(sc)})")
        late = [r for _, r, _ in sc.tally.failures if r.t_send > killed_at + 1]
        sc.note(f"failures sent more than 1 s after the kill: {len(late)}")
        self.verify_redirects(sc, sc.tally.creates, "made during the kill")
        total = self.wait_clicks(tracked, sc.tally.tracked_ok, seconds=10)
        # A SIGKILL loses the clicks k2 counted since its last flush began: those of the last
        # interval, and of a flush still being written then. Clicks are counted before the
        # answer leaves, so they are among k2's answers received from two intervals before the
        # kill on (k2 answers nothing more until it is started again, 5 s later).
        with sc.tally.lock:
            at_risk = sum(
                1 for kind, code, r, served in sc.tally.results
                if code == tracked and served == "k2" and r.status in REDIRECTS
                and killed_at - 2 * FLUSH_INTERVAL_S <= r.t_recv <= killed_at + 1
            )
        sent = sc.tally.tracked_ok
        sc.check(total is not None and total <= sent,
                 f"tracked link: {total} clicks stored of {sent} redirects: never more than sent")
        lost = sent - (total or 0)
        sc.check(lost <= at_risk,
                 f"tracked link: {lost} clicks lost <= {at_risk} that k2 answered in the "
                 f"{2 * FLUSH_INTERVAL_S:.0f} s before the kill (the last flush interval and a "
                 f"flush then being written)")

    def dynamodb_faults(self, sc):
        tracked = self.tracked_link(sc)
        phases = {}
        with Load(self.lb, self.hot, self.cold, tracked, sc.tally):
            time.sleep(3)
            # Each phase runs from the moment its fault is in place until the next one is set.
            for kind, value, seconds in (("delay", "100", 8), ("loss", "10", 8), ("partition", "", 20)):
                fleet("fault", "dynamodb", kind, *([value] if value else []))
                phases[kind] = time.time()
                time.sleep(seconds)
            phase_end = time.time()
            fleet("fault", "dynamodb", "clear")
            cleared = time.time()
            # Creates recover by themselves: wait for the load's first 201 sent after the clear.
            deadline = time.monotonic() + 60
            recovered = None
            while time.monotonic() < deadline and recovered is None:
                with sc.tally.lock:
                    recovered = next((r for _, r in sc.tally.creates if r.t_send >= cleared), None)
                time.sleep(0.2)
            time.sleep(3)
        part = phases["partition"]
        t = sc.tally
        sc.check(t.failed["hot"] == 0, f"hot redirects: {t.failed['hot']} of {t.sent['hot']} failed")
        in_partition = [
            r for kind, _, r, _ in t.results
            if kind == "create" and r.t_send >= part and r.t_recv <= phase_end
        ]
        answered_503 = [r for r in in_partition if r.status == 503 and r.headers.get("retry-after")]
        sc.check(
            in_partition and len(answered_503) == len(in_partition),
            f"creates sent while partitioned: {len(answered_503)} of {len(in_partition)} "
            f"answered 503 with Retry-After",
        )
        ungraceful = [
            (kind, r.describe()) for kind, r, _ in t.failures
            if not (r.status == 503 and r.headers.get("retry-after"))
        ]
        sc.check(not ungraceful,
                 f"every failed request answered 503 + Retry-After (other: {ungraceful[:10]})")
        sc.check(recovered is not None,
                 "creates recover by themselves after the partition"
                 + (f" (first 201 {recovered.t_recv - cleared:.1f} s after the clear)" if recovered else ""))
        # Per phase: what was sent and failed, and the median create time (a sign that the
        # fault was in place, not a check).
        bounds = {
            "before": (sc.started_wall, phases["delay"]),
            "delay": (phases["delay"], phases["loss"]),
            "loss": (phases["loss"], part),
            "partition": (part, phase_end),
        }
        for phase, (since, until) in bounds.items():
            window = [(k, r) for k, _, r, _ in t.results if since <= r.t_send < until]
            sent = collections.Counter(k for k, _ in window)
            bad = collections.Counter(k for k, r in window
                                      if not (r.status in REDIRECTS or r.status == 201))
            creates = sorted(r.t_recv - r.t_send for k, r in window if k == "create")
            median = f"{creates[len(creates) // 2] * 1000:.0f} ms" if creates else "-"
            sc.note(f"{phase}: " + ", ".join(f"{k} {sent[k]}/{bad[k]} failed" for k in KINDS)
                    + f"; median create {median}")
        self.check_clicks(sc, tracked)

    def redis_partition(self, sc):
        tracked = self.tracked_link(sc)
        with Load(self.lb, self.hot, self.cold, tracked, sc.tally):
            time.sleep(3)
            fleet("fault", "redis", "partition")
            time.sleep(20)
            fleet("fault", "redis", "clear")
            time.sleep(5)
        t = sc.tally
        failed = t.failed["hot"] + t.failed["cold"]
        sc.check(failed == 0, f"redirects: {failed} of {t.sent['hot'] + t.sent['cold']} failed "
                              f"({self.failures_text(sc)})")
        deadline = time.monotonic() + 30
        states = {}
        while time.monotonic() < deadline:
            for n, base in self.instances.items():
                client = Http(base)
                result = client.request("GET", "/readyz")
                client.close()
                states[n] = result.json()["checks"]["redis"] if result.status == 200 else result.describe()
            if all(s == "ok" for s in states.values()):
                break
            time.sleep(0.5)
        sc.check(all(s == "ok" for s in states.values()),
                 f"every instance uses Redis again after the partition: {states}")
        self.check_clicks(sc, tracked)

    def clock_skew(self, sc, offset=300):
        with Load(self.lb, self.hot, self.cold, None, sc.tally):
            time.sleep(2)
            fleet("stop", "3")
            fleet("start", "3", f"+{offset}")
            fleet("wait-up", "3")
            k = {n: Http(base) for n, base in self.instances.items()}

            probe = self.create(k[3])
            skew = (parse_ms(probe.json()["created_at"]) / 1000 - probe.t_recv) if probe.status == 201 else None
            sc.check(skew is not None and abs(skew - offset) < 5,
                     f"k3 runs {offset} s ahead (its created_at is {skew and round(skew, 1)} s off)")

            # A link that expires in 6 s by the true clock, created on k1.
            expires_ms = int((time.time() + 6) * 1000)
            code = self.create_code(k[1], expires_at=format_ms(expires_ms))
            expires = expires_ms / 1000

            early = k[3].request("HEAD", "/" + code)
            sc.check(early.status == 410,
                     f"k3 (clock +{offset} s) answers 410 for a link valid 6 s more: "
                     f"{early.describe()} (kurz decides expiry by the host's clock)")
            short = self.create(k[3], expires_at=format_ms(int((time.time() + 60) * 1000)))
            sc.check(short.status == 400,
                     f"k3 refuses a link expiring in 60 s as 'not in the future': {short.describe()}")

            samples = {1: [], 2: []}
            via_lb = collections.Counter()
            lb_client = Http(self.lb)
            while time.time() < expires + 2:
                for n in (1, 2):
                    samples[n].append(k[n].request("HEAD", "/" + code))
                r = lb_client.request("HEAD", "/" + code)
                if r.t_recv < expires:
                    via_lb[(r.headers.get("x-served-by", "-"), r.status)] += 1
                time.sleep(0.05)
            fleet("stop", "3")
            fleet("start", "3")
            fleet("wait-up", "3")
            time.sleep(1)

        for n in (1, 2):
            rs = samples[n]
            before = [r for r in rs if r.t_recv < expires]
            after = [r for r in rs if r.t_send >= expires]
            wrong = [r.describe() for r in before if r.status not in REDIRECTS]
            wrong += [r.describe() for r in after if r.status != 410]
            sc.check(
                before and after and not wrong,
                f"k{n} (true clock): {len(before)} answers before the expiry all 3xx, "
                f"{len(after)} after it all 410 (wrong: {wrong[:5]})",
            )
        sc.note("through the load balancer before the expiry: "
                + ", ".join(f"{srv} {status}: {n}" for (srv, status), n in sorted(via_lb.items())))
        sc.check(sum(sc.tally.failed.values()) == 0,
                 f"the load saw no failure ({self.failures_text(sc)})")

    def final(self, sc):
        self.verify_redirects(sc, self.all_creates, "of the whole run")


def parse_ms(text):
    """RFC 3339 UTC ('2026-11-23T08:30:00.123Z') to Unix milliseconds."""
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(t.timestamp() * 1000)


def format_ms(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def report(chaos, path, total_seconds):
    lines = [
        "# kurz chaos report",
        "",
        f"Run at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {total_seconds:.0f} s, load "
        f"concurrency {CONCURRENCY} ({THREADS['hot']} hot, {THREADS['cold']} cold, "
        f"{THREADS['create']} creating), through HAProxy to three kurz instances on "
        "DynamoDB Local and Redis.",
        "",
        "| scenario | result | seconds | hot sent/failed | cold sent/failed | "
        "create sent/failed | LB retries / redispatches |",
        "|---|---|---|---|---|---|---|",
    ]
    for sc in chaos.scenarios:
        t = sc.tally
        cells = [f"{t.sent[k]} / {t.failed[k]}" for k in KINDS]
        lb = f"{sc.lb_delta.get('retries', 0)} / {sc.lb_delta.get('redispatches', 0)}"
        lines.append(f"| {sc.name} | {'pass' if sc.passed else '**FAIL**'} | "
                     f"{sc.duration:.0f} | {' | '.join(cells)} | {lb} |")
    for sc in chaos.scenarios:
        lines += ["", f"## {sc.name}", ""]
        lines += [f"- {'pass' if p else '**FAIL**'}: {text}" for p, text in sc.checks]
        lines += [f"- note: {text}" for text in sc.notes]
        lines.append(f"- failures by kind, answer and instance: {chaos.failures_text(sc, 20)}")
        downs = {k: v for k, v in sc.lb_delta.items() if k.endswith("down") and v}
        if downs:
            lines.append(f"- HAProxy marked down: {downs}")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print("\n" + text, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default="chaos-report.md", help="where to write the report")
    parser.add_argument("--only", action="append", help="run only these scenarios (repeatable)")
    args = parser.parse_args()

    started = time.monotonic()
    chaos = Chaos(fleet_env())
    chaos.seed()
    scenarios = [
        ("rolling restart", chaos.rolling_restart),
        ("kill -9 one instance", chaos.kill_one),
        ("DynamoDB delay, loss, partition", chaos.dynamodb_faults),
        ("Redis partition", chaos.redis_partition),
        ("clock 5 min ahead on k3", chaos.clock_skew),
    ]
    for name, body in scenarios:
        if not args.only or any(o in name for o in args.only):
            chaos.run(name, body)
    chaos.run("every acknowledged create redirects", chaos.final)
    report(chaos, args.report, time.monotonic() - started)
    failed = [sc.name for sc in chaos.scenarios if not sc.passed]
    if failed:
        log(f"FAILED: {', '.join(failed)}")
        return 1
    log("all scenarios passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
