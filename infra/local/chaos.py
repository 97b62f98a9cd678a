#!/usr/bin/env python3
"""Chaos tests for the local kurz fleet (infra/local/fleet.sh), through its load balancer.

Runs on the fleet's client host (`fleet.sh exec client chaos.py`), so every request stays in
the fleet's namespaces. A load generator of fixed concurrency sends a steady mix of redirects
of hot links (cached everywhere), redirects of cold links (fresh ones that only the store
knows, and older ones) and creates, while each scenario breaks something with fleet.sh:
rolling restart, SIGKILL of an instance, faults between the instances and DynamoDB, a Redis
partition, one instance's clock five minutes ahead; on a fleet whose clicks go through the click
stream (KURZ_FLEET_CLICKS=kinesis), SIGKILL of a `kurz aggregate` consumer instead. Every scenario is bounded in time and in
requests, asserts behaviour (never speed), prints what it sent and what failed by kind, and the
run ends with a Markdown report (--report). Exit status 1 when any check failed.

A fault is checked to be in place before what it should cause is: TCP connects timed from an
instance's namespace show the added delay, the lost packets, the partition; /readyz shows the
instances cut off from Redis; k3's created_at shows its clock off. A check that passes because
its fault silently was not there would prove nothing.

`chaos.py --probe HOST:PORT` is the connect prober itself, run inside a fleet host's namespace
(`fleet.sh exec k1 chaos.py --probe ...`); it prints what each connect took as JSON.

Python standard library only.
"""

import argparse
import collections
import datetime
import http.client
import json
import os
import random
import re
import socket
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
# A probe's TCP connect that has no answer within this lost its SYN-ACK (Linux sends the SYN
# again only after 1 s): far above a connect on the fleet's bridge (well under 10 ms, or the
# configured delay more), far below the retransmission.
PROBE_TIMEOUT_S = 0.5
# README.md (With Redis) and docs/threat-model.md: a link removed while Redis could not be told
# stops redirecting on every instance "within about 3.5 s of Redis answering that instance
# again": the breaker's 1 s cool-off, the 250 ms retry, at most 2 s for listeners to resubscribe.
TAKEDOWN_AFTER_REDIS_S = 3.5


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def fleet(*args, timeout=90):
    """Runs a fleet.sh command; its own waits are bounded, and this bounds it again."""
    log(f"fleet.sh {' '.join(args)}")
    subprocess.run([FLEET, *args], check=True, timeout=timeout)


def fleet_ok(*args):
    """Runs a fleet.sh command that answers yes (exit 0) or no."""
    log(f"fleet.sh {' '.join(args)}")
    return subprocess.run([FLEET, *args], timeout=30).returncode == 0


def connect_times(target, samples, threads=20):
    """Times `samples` TCP connects to `target` (host:port) from `threads` threads, each one
    connect every 10 ms or so: the seconds each took, or None where none came within
    PROBE_TIMEOUT_S."""
    host, port = target.rsplit(":", 1)
    times = [None] * samples

    def worker(first):
        for i in range(first, samples, threads):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(PROBE_TIMEOUT_S)
            started = time.monotonic()
            try:
                sock.connect((host, int(port)))
                times[i] = time.monotonic() - started
            except OSError:
                pass
            finally:
                sock.close()
            time.sleep(0.01)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(min(threads, samples))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return times


class Probe:
    """What a connect probe saw."""

    def __init__(self, host, target, times):
        self.host, self.target, self.times = host, target, times
        self.answered = sorted(t for t in times if t is not None)
        self.lost = len(times) - len(self.answered)

    @property
    def median_ms(self):
        return self.answered[len(self.answered) // 2] * 1000 if self.answered else None

    def describe(self):
        median = f"{self.median_ms:.1f} ms" if self.answered else "-"
        return (f"{len(self.answered)}/{len(self.times)} answered within "
                f"{PROBE_TIMEOUT_S * 1000:.0f} ms, median {median}")


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
        self.creates = []  # (code, Result, URL sent) for every 201
        self.results = []  # (kind, code, Result, served by) for every request
        self.tracked_ok = 0  # 3xx answers to GETs of the scenario's tracked link

    def add(self, kind, result, ok, code=None, tracked=False, url=None):
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
                self.creates.append((code, result, url))

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
            self.tally.add("create", result, result.status == 201, code, url=url)
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
        self.stream = env.get("KURZ_FLEET_CLICKS") == "kinesis"
        self.regions = env.get("KURZ_FLEET_REGIONS") == "2"
        self.lb2 = env.get("KURZ_FLEET_LB2")
        self.region_links = []  # (code, URL) acknowledged in either region
        self.consumers = {n: env[f"KURZ_FLEET_C{n}"] for n in (1, 2)} if self.stream else {}
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

    def probe(self, host, target, samples):
        """TCP connects to `target` timed from inside fleet host `host`'s namespace."""
        out = subprocess.run(
            [FLEET, "exec", host, "python3", os.path.abspath(__file__), "--probe", target,
             "--samples", str(samples)],
            check=True, capture_output=True, text=True, timeout=60,
        )
        probe = Probe(host, target, json.loads(out.stdout))
        log(f"probe {host} -> {target}: {probe.describe()}")
        return probe

    def direct(self, n, method, path, headers=None):
        """One request straight to instance n, on a connection of its own."""
        client = Http(self.instances[n], timeout=5)
        result = client.request(method, path, headers=headers)
        client.close()
        return result

    def redis_cli(self, *args):
        out = subprocess.run([FLEET, "exec", "redis", "redis-cli", *args], check=True,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def lb_rows(self):
        """The rows of HAProxy's stats CSV for the kurz backend, each a dict by column name
        (none when the stats page does not answer)."""
        url = urllib.parse.urlsplit(self.env["KURZ_FLEET_STATS"])
        client = Http(f"http://{url.netloc}")
        result = client.request("GET", url.path + ";csv")
        client.close()
        if result.status != 200:
            return []
        lines = result.body.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = (dict(zip(header, line.split(","))) for line in lines[1:])
        return [r for r in rows if r.get("pxname") == "kurz"]

    def lb_states(self):
        """HAProxy's state of each instance: UP, DOWN, "UP 1/2" (going down)..."""
        return {r["svname"]: r.get("status") for r in self.lb_rows()
                if r.get("svname") in ("k1", "k2", "k3")}

    def lb_counters(self):
        """HAProxy's backend counters: retries, redispatches, and each instance's downs."""
        counters = {}
        for row in self.lb_rows():
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

    def clicks_of(self, code, base=None):
        """The link's total_clicks as the load balancer at `base` (default: the fleet's) says."""
        client = Http(base or self.lb)
        result = client.request("GET", f"/api/v1/links/{code}/stats", headers=self.admin)
        client.close()
        return result.json().get("total_clicks") if result.status == 200 else None

    def wait_clicks(self, code, expected, seconds=60, base=None):
        """Polls the stats until total_clicks reaches `expected` (clicks are flushed in the
        background) or the deadline passes; returns the last total seen."""
        deadline = time.monotonic() + seconds
        total = None
        while time.monotonic() < deadline:
            total = self.clicks_of(code, base)
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
        """HEAD (no click) through the load balancer for every acknowledged code: a redirect,
        to the URL the link was created with."""
        links = [(code, url) for code, _, url in creates]
        bad = self.misdirected(self.lb, links)
        sc.check(
            not bad,
            f"all {len(links)} acknowledged creates {what} redirect to the URL they were "
            f"created with" + (f"; failing: {bad[:10]}" if bad else ""),
        )

    def misdirected(self, base, links):
        """The (code, answer) of each (code, URL) in `links` that `base` does not redirect to
        that URL, from CONCURRENCY connections (HEAD: no click is counted)."""

        def head(chunk):
            client = Http(base, timeout=10)
            bad = []
            for code, url in chunk:
                result = client.request("HEAD", "/" + code)
                if result.status not in REDIRECTS:
                    bad.append((code, result.describe()))
                elif result.headers.get("location") != url:
                    bad.append((code, f"Location {result.headers.get('location')!r} != {url!r}"))
            client.close()
            return bad

        chunks = [links[i::CONCURRENCY] for i in range(CONCURRENCY)]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            return [b for part in pool.map(head, chunks) for b in part]

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
        flushed_through = None
        with Load(self.lb, self.hot, self.cold, tracked, sc.tally):
            # Up to the kill, what k2 says it has flushed: every click it counted before
            # kurz_clicks_flushed_through_timestamp_seconds is stored (the last reading is
            # at most as new as the truth, so the clicks at risk counted from it are a bound).
            until = time.monotonic() + 3
            while time.monotonic() < until:
                reading = self.metric_of(2, "kurz_clicks_flushed_through_timestamp_seconds")
                if reading is not None:
                    flushed_through = reading
                time.sleep(0.05)
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
        # A SIGKILL loses the clicks k2 counted after the collection of its last flush that
        # was written. Clicks are counted before the answer leaves, so those lost are among
        # k2's answers received from that moment on (k2 answers nothing more until it is
        # started again, 5 s later). Without a reading, all of k2's answers are at risk.
        sc.check(flushed_through is not None,
                 f"k2 reported kurz_clicks_flushed_through_timestamp_seconds before the kill "
                 f"({flushed_through})")
        since = flushed_through if flushed_through is not None else 0.0
        with sc.tally.lock:
            at_risk = sum(
                1 for kind, code, r, served in sc.tally.results
                if code == tracked and served == "k2" and r.status in REDIRECTS
                and since <= r.t_recv <= killed_at + 1
            )
        sent = sc.tally.tracked_ok
        sc.check(total is not None and total <= sent,
                 f"tracked link: {total} clicks stored of {sent} redirects: never more than sent")
        lost = sent - (total or 0)
        sc.check(lost <= at_risk,
                 f"tracked link: {lost} clicks lost <= {at_risk} that k2 answered after its "
                 f"last flushed collection, {killed_at - since:.2f} s before the kill")
        sc.note(f"k2 had flushed every click counted up to {killed_at - since:.2f} s before the "
                f"kill ({FLUSH_INTERVAL_S:.0f} s flush interval)")

    def consumer_metrics(self, name):
        """`name` on each consumer's /metrics, by consumer (None where it does not answer)."""
        values = {}
        for n, base in self.consumers.items():
            client = Http(base, timeout=2)
            answer = client.request("GET", "/metrics")
            client.close()
            values[n] = (metric_value(answer.body.decode(errors="replace"), name)
                         if answer.status == 200 else None)
        return values

    def wait_shared(self, shards, seconds):
        """Polls until both consumers hold leases, all `shards` between them; their holdings,
        or None after `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            held = self.consumer_metrics("kurz_aggregate_leases_held")
            if held.get(1) and held.get(2) and held[1] + held[2] == shards:
                return held
            time.sleep(0.25)
        return None

    def kill_consumer(self, sc):
        """kill -9 of consumer c1 while clicks flow: c2 takes its shards when their leases run
        out and writes the windows c1 had begun; c1, started again, takes its share back. Not
        a click of the tracked link is lost or counted twice."""
        tracked = self.tracked_link(sc)
        shards = int(self.env["KURZ_FLEET_STREAM_SHARDS"])
        lease_s = int(self.env["KURZ_FLEET_CONSUMER_LEASE_MS"]) / 1000
        taken_before = self.consumer_metrics("kurz_aggregate_leases_taken_total")
        shared = self.wait_shared(shards, 3 * lease_s + 10)
        sc.check(shared is not None,
                 f"before the kill each consumer holds a share of the {shards} shards ({shared})")
        with Load(self.lb, self.hot, self.cold, tracked, sc.tally):
            time.sleep(4)
            fleet("consumer", "kill", "1")
            killed = time.monotonic()
            # c1's leases run out unrenewed; c2 takes them and redoes c1's begun windows.
            deadline = killed + 3 * lease_s + 10
            took = None
            while time.monotonic() < deadline:
                if self.consumer_metrics("kurz_aggregate_leases_held").get(2) == shards:
                    took = time.monotonic() - killed
                    break
                time.sleep(0.25)
            sc.check(took is not None,
                     f"c2 holds all {shards} shards after c1's kill -9 (after "
                     f"{took and round(took, 1)} s; leases last {lease_s:.0f} s)")
            fleet("consumer", "start", "1")
            # Leases move back from c2, which holds more than its share.
            shared = self.wait_shared(shards, 3 * lease_s + 10)
            sc.check(shared is not None,
                     f"started again, c1 takes a share of the shards back from c2 ({shared})")
            time.sleep(3)
        failed = sum(sc.tally.failed.values())
        sc.check(failed == 0, f"no request failed: redirects and creates never wait for the "
                              f"consumers ({self.failures_text(sc)})")
        taken = self.consumer_metrics("kurz_aggregate_leases_taken_total")
        sc.note(f"leases taken by c2 during the scenario: "
                f"{(taken.get(2) or 0) - (taken_before.get(2) or 0):.0f}; by c1 since its "
                f"start: {taken.get(1)}")
        # Every click reaches the stats within a window and a lease or two; then, once more than
        # a lease and a window later, the total is still the same: no window applied twice.
        window_s = 10
        expected = sc.tally.tracked_ok
        total = self.wait_clicks(tracked, expected, seconds=4 * window_s + 3 * lease_s)
        sc.check(total == expected,
                 f"tracked link {tracked}: total_clicks {total} == {expected} redirects "
                 f"answered 3xx, through the stream and a consumer killed mid-window")
        time.sleep(window_s + lease_s + 2)
        again = self.clicks_of(tracked)
        sc.check(again == expected,
                 f"tracked link {tracked}: still {again} == {expected} a window and a lease "
                 f"later (no window written twice)")
        dropped = {n: self.metric_of(n, "kurz_click_stream_dropped_total") for n in self.instances}
        sc.check(all(v == 0 for v in dropped.values()),
                 f"no instance dropped clicks on the way to the stream: {dropped}")

    def metric_of(self, n, name):
        """An unlabelled metric of instance n (None when it does not answer)."""
        answer = self.direct(n, "GET", "/metrics", headers=self.admin)
        if answer.status != 200:
            return None
        return metric_value(answer.body.decode(errors="replace"), name)

    def dynamodb_faults(self, sc, delay_ms=100, loss_pct=10):
        tracked = self.tracked_link(sc)
        phases = {}
        dynamodb = self.env["KURZ_FLEET_DYNAMODB"]
        probes = {}
        helper_alive = {}
        with Load(self.lb, self.hot, self.cold, tracked, sc.tally):
            time.sleep(3)
            # Connects from k1's namespace to DynamoDB's port, as kurz's own go: before any
            # fault, then at the start of each phase, to see the fault is in place.
            before = self.probe("k1", dynamodb, 100)
            # Each phase runs from the moment its fault is in place until the next one is set.
            for kind, value, seconds in (("delay", delay_ms, 8), ("loss", loss_pct, 8),
                                         ("partition", None, 20)):
                fleet("fault", "dynamodb", kind, *([str(value)] if value else []))
                phases[kind] = time.time()
                probes[kind] = self.probe("k1", dynamodb, 20 if kind == "partition" else 100)
                time.sleep(max(0.0, seconds - (time.time() - phases[kind])))
                if kind != "partition":
                    helper_alive[kind] = fleet_ok("fault", "dynamodb", "check")
                    if not helper_alive[kind]:
                        # Clears what is left (and says so again), so the next phase can start
                        # and every check below is still made.
                        fleet_ok("fault", "dynamodb", "clear")
            phase_end = time.time()
            fleet("fault", "dynamodb", "clear")
            cleared = time.time()
            # Creates recover by themselves: wait for the load's first 201 sent after the clear.
            deadline = time.monotonic() + 60
            recovered = None
            while time.monotonic() < deadline and recovered is None:
                with sc.tally.lock:
                    recovered = next((r for _, r, _ in sc.tally.creates if r.t_send >= cleared), None)
                time.sleep(0.2)
            time.sleep(3)
        part = phases["partition"]
        t = sc.tally
        delay = probes["delay"]
        added = (delay.median_ms - before.median_ms
                 if delay.answered and before.answered else None)
        sc.check(
            len(delay.answered) >= 0.95 * len(delay.times) and added is not None
            and added >= 0.8 * delay_ms,
            f"delay in place: TCP connects from k1 to DynamoDB {delay.describe()}, against "
            f"{before.describe()} before any fault: "
            + (f"{added:+.0f} ms" if added is not None else "nothing")
            + f" added, >= 80% of the {delay_ms} ms configured, and no more lost than 5%",
        )
        loss = probes["loss"]
        sc.check(
            before.lost + 2 <= loss.lost <= len(loss.times) // 2,
            f"loss in place: {loss.lost} of {len(loss.times)} TCP connects from k1 to DynamoDB "
            f"had no answer within {PROBE_TIMEOUT_S * 1000:.0f} ms (SYN-ACK lost), against "
            f"{before.lost} before any fault; {loss_pct}% configured (about "
            f"{len(loss.times) * loss_pct // 100} expected): at least 2 more, at most half",
        )
        partition = probes["partition"]
        sc.check(
            not partition.answered,
            f"partition in place: {partition.lost} of {len(partition.times)} TCP connects from "
            f"k1 to DynamoDB unanswered",
        )
        sc.check(
            all(helper_alive.values()),
            f"the fault's NFQUEUE helper (netdelay.py, where tc netem is missing) was alive at "
            f"the end of each phase it served: {helper_alive}",
        )
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
        # Per phase: what was sent and failed, and the median create time.
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

    def redis_states(self):
        """Each instance's /readyz `checks.redis` (or what it answered instead)."""
        states = {}
        for n in self.instances:
            result = self.direct(n, "GET", "/readyz")
            states[n] = (result.json()["checks"]["redis"] if result.status == 200
                         else result.describe())
        return states

    def wait_redis_states(self, want, seconds):
        deadline = time.monotonic() + seconds
        while True:
            states = self.redis_states()
            if all(s == want for s in states.values()) or time.monotonic() >= deadline:
                return states
            time.sleep(0.25)

    def redis_partition(self, sc, seconds=20):
        tracked = self.tracked_link(sc)
        # A link every instance has cached (its L1, and Redis), to be deleted during the
        # partition: the takedown has to reach Redis and every L1 once Redis answers again.
        doomed_url = f"https://example.com/chaos/taken-down/{uuid.uuid4().hex}"
        doomed = self.create_code(url=doomed_url)
        cached = {n: self.direct(n, "GET", "/" + doomed) for n in self.instances}
        # Written to Redis in the background by the first instance that read the store.
        deadline = time.monotonic() + 10
        while (doomed_url not in self.redis_cli("GET", f"kurz:l:{doomed}")
               and time.monotonic() < deadline):
            time.sleep(0.1)
        in_redis = doomed_url in self.redis_cli("GET", f"kurz:l:{doomed}")
        sc.check(
            in_redis and all(r.status in REDIRECTS and r.headers.get("location") == doomed_url
                             for r in cached.values()),
            f"the link to take down ({doomed}) redirected through every instance and is in "
            f"Redis: {({n: r.describe() for n, r in cached.items()})}, in Redis {in_redis}",
        )
        polls = []  # (instance, Result) of HEADs of the deleted link, straight to each instance
        with Load(self.lb, self.hot, self.cold, tracked, sc.tally):
            time.sleep(3)
            fleet("fault", "redis", "partition")
            partitioned = time.time()
            # The partition is in place: every instance finds Redis gone (its breaker opens on
            # the load's Redis calls), and connects from k1 to Redis go unanswered.
            states = self.wait_redis_states("unavailable", 10)
            sc.check(all(s == "unavailable" for s in states.values()),
                     f"every instance reports Redis unavailable during the partition: {states}")
            cut = self.probe("k1", self.env["KURZ_FLEET_REDIS"], 20)
            sc.check(not cut.answered,
                     f"partition in place: TCP connects from k1 to Redis: {cut.describe()}")

            deleted = self.direct(1, "DELETE", f"/api/v1/links/{doomed}", headers=self.admin)
            sc.check(deleted.status == 204,
                     f"the link is deleted through k1 during the partition: {deleted.describe()}")
            at_once = self.direct(1, "HEAD", "/" + doomed)
            sc.check(at_once.status in (404, 410),
                     f"k1 stops redirecting it at once: {at_once.describe()}")
            during = {n: self.direct(n, "HEAD", "/" + doomed).describe() for n in (2, 3)}
            sc.note(f"k2 and k3 answer it during the partition (from their L1, within the bound "
                    f"of cache.local.ttl_ms while Redis is away): {during}")
            time.sleep(max(0.0, seconds - (time.time() - partitioned)))
            fleet("fault", "redis", "clear")
            cleared = time.time()
            # Every instance directly, every 100 ms, past the bound and until none serves it.
            while True:
                for n in self.instances:
                    polls.append((n, self.direct(n, "HEAD", "/" + doomed)))
                latest = {n: r for n, r in polls[-len(self.instances):]}
                gone = all(r.status in (404, 410) for r in latest.values())
                elapsed = time.time() - cleared
                if (gone and elapsed > TAKEDOWN_AFTER_REDIS_S + 1.5) or elapsed > 30:
                    break
                time.sleep(0.1)
        t = sc.tally
        failed = t.failed["hot"] + t.failed["cold"]
        sc.check(failed == 0, f"redirects: {failed} of {t.sent['hot'] + t.sent['cold']} failed "
                              f"({self.failures_text(sc)})")
        served = [(n, r.t_send - cleared) for n, r in polls if r.status in REDIRECTS]
        late = [(n, round(after, 2)) for n, after in served if after > TAKEDOWN_AFTER_REDIS_S]
        last = max((after for _, after in served), default=None)
        other = [(n, r.describe()) for n, r in polls if r.status not in REDIRECTS | {404, 410}]
        sc.check(
            not late and not other and gone,
            f"the link deleted during the partition: no instance redirects it in a request sent "
            f"more than {TAKEDOWN_AFTER_REDIS_S} s after the partition cleared (README, "
            f"threat model: within about 3.5 s of Redis answering the deleting instance again; "
            f"breaker cool-off 1 s + retry 250 ms + resubscribe 2 s); last redirect "
            + (f"{last:.2f} s after the clear" if last is not None else "before the clear")
            + f", {len(polls)} polls" + (f"; late: {late[:6]}" if late else "")
            + (f"; other answers: {other[:6]}" if other else ""),
        )
        in_redis = self.redis_cli("GET", f"kurz:l:{doomed}")
        sc.check(doomed_url not in in_redis,
                 f"Redis no longer holds the deleted link (its entry: {in_redis!r})")
        states = self.wait_redis_states("ok", 30)
        sc.check(all(s == "ok" for s in states.values()),
                 f"every instance uses Redis again after the partition: {states}")
        self.check_clicks(sc, tracked)

    def log_since_start(self, name, marker):
        """Instance `name`'s log from its last start line containing `marker` on."""
        with open(os.path.join(self.env["KURZ_FLEET_LOGS"], f"{name}.log"), errors="replace") as f:
            lines = f.read().splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("--- start") and marker in line]
        return lines[starts[-1]:] if starts else []

    def clock_skew(self, sc, offset=300):
        with Load(self.lb, self.hot, self.cold, None, sc.tally):
            time.sleep(2)
            fleet("stop", "3")
            fleet("start", "3", f"+{offset}")
            skewed_from = time.time()
            k = {n: Http(base) for n, base in self.instances.items()}

            # The fault is in place: what k3 stamps on a link shows its clock.
            probe = self.create(k[3])
            skew = (parse_ms(probe.json()["created_at"]) / 1000 - probe.t_recv) if probe.status == 201 else None
            sc.check(skew is not None and abs(skew - offset) < 5,
                     f"k3 runs {offset} s ahead (its created_at is {skew and round(skew, 1)} s off)")

            # k3 finds out by itself (against DynamoDB's clock, at start-up): metric, log, /readyz.
            text = k[3].request("GET", "/metrics", headers=self.admin)
            gauge = metric_value(text.body.decode(errors="replace"), "kurz_clock_skew_seconds") \
                if text.status == 200 else None
            sc.check(gauge is not None and abs(gauge - offset) < 2,
                     f"k3's kurz_clock_skew_seconds is {gauge} (its clock is {offset} s ahead)")
            ready = k[3].request("GET", "/readyz")
            clock = None
            if ready.status == 503 and ready.headers.get("content-type") == "application/problem+json":
                clock = ready.json().get("checks", {}).get("clock")
            named = re.match(r"([0-9.]+) s ahead of dynamodb's clock", clock or "")
            sc.check(named and abs(float(named.group(1)) - offset) < 2,
                     f"k3's /readyz answers {ready.describe()} naming the clock: {clock!r}")
            deadline = time.monotonic() + 5
            warned = []
            while time.monotonic() < deadline:
                warned = [line for line in self.log_since_start("k3", f"clock +{offset}s")
                          if "WARN" in line.upper() and "clock skew" in line]
                if warned:
                    break
                time.sleep(0.2)
            sc.check(warned, "k3's log warns of the skew: "
                     + (warned[0][-240:] if warned else "no such line since its start"))

            # A link that expires in 6 s by the true clock, created on k1.
            expires_ms = int((time.time() + 6) * 1000)
            code = self.create_code(k[1], expires_at=format_ms(expires_ms))
            expires = expires_ms / 1000

            samples = {1: [], 2: []}
            via_lb = collections.Counter()
            lb_seen = collections.Counter()
            lb_client = Http(self.lb)
            next_lb = 0.0
            while time.time() < expires + 2:
                for n in (1, 2):
                    samples[n].append(k[n].request("HEAD", "/" + code))
                r = lb_client.request("HEAD", "/" + code)
                if r.t_recv < expires:
                    via_lb[(r.headers.get("x-served-by", "-"), r.status)] += 1
                if time.monotonic() >= next_lb:
                    lb_seen[self.lb_states().get("k3", "?")] += 1
                    next_lb = time.monotonic() + 0.25
                time.sleep(0.05)
            skewed_until = time.time()
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
        # HAProxy's checks (rise 2, every 500 ms) would have put k3 back within about a second
        # of a /readyz 200.
        with sc.tally.lock:
            by_k3 = sum(1 for _, _, r, served in sc.tally.results
                        if served == "k3" and skewed_from <= r.t_send <= skewed_until)
        sc.check(
            lb_seen and not any(state.startswith("UP") for state in lb_seen) and by_k3 == 0,
            f"the load balancer kept k3 out for the {skewed_until - skewed_from:.0f} s its clock "
            f"was off: HAProxy's states of it {dict(lb_seen)}, load requests it served {by_k3}",
        )
        sc.note("through the load balancer before the expiry: "
                + ", ".join(f"{srv} {status}: {n}" for (srv, status), n in sorted(via_lb.items())))
        sc.check(sum(sc.tally.failed.values()) == 0,
                 f"the load saw no failure ({self.failures_text(sc)})")

    def final(self, sc):
        self.verify_redirects(sc, self.all_creates, "of the whole run")

    # ------------------------------------------------------------------ two regions

    def replicator(self, *args):
        return fleet("replicator", *args, timeout=120)

    def create_at(self, base, **body):
        """A create through the load balancer at `base`: its answer, and the URL sent."""
        body.setdefault("url", f"https://example.com/chaos/region/{uuid.uuid4().hex}")
        client = Http(base)
        result = self.create(client, **body)
        client.close()
        return result, body["url"]

    def head_at(self, base, code):
        client = Http(base, timeout=10)
        result = client.request("HEAD", "/" + code)
        client.close()
        return result

    def regions_serving(self, sc):
        """Both regions create at once, each redirecting the other's links at once; aliases
        raced across them; a delete in one reaching the other's caches."""
        lag_s = int(self.env["KURZ_FLEET_REPLICATION_LAG_MS"]) / 1000
        made = {"alpha": [], "beta": []}
        crossed = []  # (code, answer of the other region at once)
        lock = threading.Lock()

        def creating(region, seed):
            base, other = (self.lb, self.lb2) if region == "alpha" else (self.lb2, self.lb)
            client, across = Http(base), Http(other)
            for _ in range(25):
                url = f"https://example.com/chaos/{region}/{seed}/{uuid.uuid4().hex}"
                result = client.request("POST", "/api/v1/links", {"url": url})
                code = result.json()["code"] if result.status == 201 else None
                sc.tally.add("create", result, code is not None, code, url=url)
                if code:
                    answer = across.request("HEAD", "/" + code)
                    with lock:
                        made[region].append((code, url))
                        if answer.status not in REDIRECTS or answer.headers.get("location") != url:
                            crossed.append((code, answer.describe()))
            client.close()
            across.close()

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda a: creating(*a), [(r, i) for r in ("alpha", "beta") for i in range(3)]))
        codes = [c for links in made.values() for c, _ in links]
        sc.check(len(codes) == 150 and len(set(codes)) == len(codes),
                 f"{len(made['alpha'])} links created in alpha and {len(made['beta'])} in beta "
                 f"at the same time, {len(set(codes))} distinct codes: none minted twice")
        sc.check(not crossed, f"each of the {len(codes)} redirects from the other region at once, "
                 f"before any replication (HEAD right after the 201)"
                 + (f"; failing: {crossed[:10]}" if crossed else ""))
        self.region_links = [l for links in made.values() for l in links]

        # Aliases raced across the regions: exactly one create wins each.
        races = []
        for i in range(10):
            alias = f"race-{uuid.uuid4().hex[:10]}"
            start = threading.Barrier(2)

            def claim(base, alias=alias, start=start):
                start.wait()
                return self.create_at(base, alias=alias)

            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(claim, (self.lb, self.lb2)))
            races.append((alias, answers))
        lost = [(a, [r.describe() for r, _ in ans]) for a, ans in races
                if sorted(r.status for r, _ in ans) != [201, 409]]
        sc.check(not lost, "10 aliases raced in both regions at once: each has exactly one 201 "
                 "and one 409" + (f"; not so: {lost}" if lost else ""))
        winners = [(a, next(url for r, url in ans if r.status == 201))
                   for a, ans in races if a not in dict(lost)]
        bad = self.misdirected(self.lb, winners) + self.misdirected(self.lb2, winners)
        sc.check(not bad, "both regions redirect each raced alias to its winner's URL"
                 + (f"; failing: {bad[:10]}" if bad else ""))
        self.region_links += winners

        # A delete in alpha reaches beta's caches (its L1s and its Redis) through beta's stream.
        code = self.create_code()
        for n in (4, 5, 6):
            client = Http(self.env[f"KURZ_FLEET_K{n}"])
            client.request("HEAD", "/" + code)
            client.close()
        deleted = self.once("DELETE", f"/api/v1/links/{code}", headers=self.admin)
        # The bound leaves room for DynamoDB Local's stream reads on a busy machine (the first
        # 404 came 1.1-1.9 s after the delete in the runs so far); without the stream, beta's
        # Redis would serve the link for an hour.
        bound = lag_s + 5.0
        late, first_404 = [], None
        deadline = deleted.t_recv + bound + 3
        while time.time() < deadline:
            for n in (4, 5, 6):
                client = Http(self.env[f"KURZ_FLEET_K{n}"], timeout=5)
                result = client.request("HEAD", "/" + code)
                client.close()
                if result.status == 404 and first_404 is None:
                    first_404 = result.t_send - deleted.t_recv
                if result.status != 404 and result.t_send - deleted.t_recv > bound:
                    late.append((f"k{n}", round(result.t_send - deleted.t_recv, 2), result.describe()))
            time.sleep(0.1)
        sc.check(deleted.status == 204, f"the delete in alpha answered {deleted.describe()}")
        sc.check(not late and first_404 is not None,
                 f"every beta instance answers 404 to every request sent more than {bound:.1f} s "
                 f"(the replication lag, {lag_s:.1f} s, plus 5 s) after the delete's answer"
                 + (f"; late: {late[:10]}" if late else ""))
        if first_404 is not None:
            sc.note(f"beta's first 404 for the link deleted in alpha came {first_404:.2f} s after "
                    "the delete's answer")

    def region_lost(self, sc):
        """Region beta killed, all its processes and its table: alpha keeps redirecting what
        had replicated and keeps creating; beta comes back and the two converge."""
        # Clicks in both regions on a link of each, flushed and replicated.
        tracked = [self.create_code(), self.create_at(self.lb2)[0].json()["code"]]
        sent = collections.Counter()
        for base, n in ((self.lb, 7), (self.lb2, 5)):
            client = Http(base)
            for code in tracked:
                for _ in range(n):
                    result = client.request("GET", "/" + code)
                    sc.tally.add("hot", result, result.status in REDIRECTS, code)
                    sent[code] += result.status in REDIRECTS
            client.close()
        for code in tracked:
            totals = [self.wait_clicks(code, sent[code], base=base) for base in (self.lb, self.lb2)]
            sc.check(totals == [sent[code]] * 2,
                     f"{code}: total_clicks {totals} in alpha and beta == {sent[code]} sent in both")
        # The replication point, then a partition and links made in beta meanwhile.
        self.replicator("settle")
        before = list(self.region_links) + [(c, u) for c, _, u in self.all_creates]
        self.replicator("pause")
        unreplicated = []
        for _ in range(5):
            result, url = self.create_at(self.lb2)
            if result.status == 201:
                unreplicated.append(result.json()["code"])
        with Load(self.lb, self.hot, [c for c, _ in before[:200]], None, sc.tally) as load:
            time.sleep(2)
            fleet("region", "kill", timeout=60)
            lost_at = time.time()
            time.sleep(8)
            bad = self.misdirected(self.lb, before)
            sc.check(not bad, f"with beta gone, alpha redirects all {len(before)} links "
                     "acknowledged before the replication point (both regions', and the raced "
                     "aliases)" + (f"; failing: {bad[:10]}" if bad else ""))
            gone = [c for c in unreplicated if self.head_at(self.lb, c).status != 404]
            sc.check(len(unreplicated) == 5 and not gone,
                     f"the {len(unreplicated)} links made in beta after the replication point "
                     "are lost with it (alpha answers 404): the RPO is the replication lag"
                     + (f"; not so: {gone}" if gone else ""))
            time.sleep(2)
            load.stopping.set()
        during = [(c, u) for c, r, u in sc.tally.creates if r.t_send > lost_at]
        sc.check(sum(sc.tally.failed.values()) == 0 and during,
                 f"alpha's load through the loss: {sc.tally.summary()}, {len(during)} creates "
                 f"after beta was killed; no failure ({self.failures_text(sc)})")

        # Beta comes back: a new table filled from alpha's, then both replicate again.
        fleet("region", "start", timeout=240)
        self.replicator("resume")
        after = []
        for _ in range(10):
            result, url = self.create_at(self.lb2)
            if result.status == 201:
                after.append((result.json()["code"], url))
        reused = [c for c, _ in after if c in unreplicated]
        sc.check(len(after) == 10 and not reused,
                 f"beta back creates ({len(after)} of 10), and never hands out a code of a link "
                 "lost with it" + (f"; reused: {reused}" if reused else ""))
        self.replicator("settle")
        everything = before + [(c, u) for c, _, u in sc.tally.creates] + after
        for name, base in (("alpha", self.lb), ("beta", self.lb2)):
            bad = self.misdirected(base, everything)
            sc.check(not bad, f"{name} redirects all {len(everything)} links acknowledged in "
                     "either region (but those lost with beta)"
                     + (f"; failing: {bad[:10]}" if bad else ""))
        for code in tracked:
            totals = [self.wait_clicks(code, sent[code], base=base) for base in (self.lb, self.lb2)]
            sc.check(totals == [sent[code]] * 2,
                     f"after the loss, {code}: total_clicks {totals} in alpha and beta == "
                     f"{sent[code]} sent")


def metric_value(text, name):
    """The value of an unlabelled metric in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


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
        "DynamoDB Local and Redis"
        + (", their clicks through a Kinesis emulator to two kurz aggregate consumers."
           if chaos.stream else "")
        + (f"; a second region of the same behind its own HAProxy, the two tables replicated "
           f"by the fleet-replicator with a {chaos.env['KURZ_FLEET_REPLICATION_LAG_MS']} ms lag."
           if chaos.regions else "."),
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
    parser.add_argument("--probe", metavar="HOST:PORT",
                        help="only time TCP connects to HOST:PORT and print them as JSON")
    parser.add_argument("--samples", type=int, default=100, help="connects for --probe")
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(connect_times(args.probe, args.samples)))
        return 0

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
    if chaos.stream:
        # Clicks go through the stream here: its scenario; the others run on the store's sink.
        scenarios = [("kill -9 one consumer (click stream)", chaos.kill_consumer)]
    if chaos.regions:
        # Two regions: their scenarios; the others run on one region.
        scenarios = [
            ("two regions, both serving", chaos.regions_serving),
            ("a region lost and back", chaos.region_lost),
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
