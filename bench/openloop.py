"""The open-loop load client: users arrive at a fixed rate, whatever the server answers.

One asyncio process (aiohttp, one ClientSession, a connection pool larger than the requests
that can be in flight) starts request ``i`` at ``t0 + i / rate``, on a schedule computed
before the first one, so a slow answer never delays the next arrival (no coordinated
omission). Each request is a user's Connect (``POST pools/{id}/connect/``), after their
password login (``POST auth/token/``) when they have no token; a pending answer (202) is
followed by ``POST sessions/{id}/ticket/`` after its ``retry_after`` until the ticket comes
(200). Latency runs from the request's **intended** start to its final answer.

Every request counts: a final answer other than 200 and an exception are failures at the
time they came, a request still unanswered ``timeout_s`` after its intended start is a
time-out, counted as +inf in the percentiles. The client's own CPU (``getrusage`` of this
process) is reported beside, and how late it started requests against the schedule: a
client that cannot keep to its schedule would show there, and in the latencies.

    .venv/bin/python -m bench.openloop PLAN.json RESULT.json

The plan: ``{"rate": …, "timeout_s": …, "connections": …, "requests": [{"url": …,
"forwarded_for": …, "token": … | "login": {"url": …, "username": …, "password": …}}, …]}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import sys
from collections import Counter

import aiohttp


def schedule(count: int, rate: float, t0: float) -> list[float]:
    """The intended start of each request: ``t0 + i / rate``."""
    return [t0 + i / rate for i in range(count)]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): the smallest value with at least q % of the
    values at or below it; +inf values (time-outs) rank last."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def latency_ms(seconds: float | None) -> float | str | None:
    """Milliseconds, or ``"timeout"`` when the rank falls on a request never answered."""
    if seconds is None:
        return None
    return "timeout" if math.isinf(seconds) else round(seconds * 1000, 1)


def latency_summary(seconds: list[float]) -> dict:
    return {f"p{q}_ms": latency_ms(percentile(seconds, q)) for q in (50, 95, 99)} | {
        "max_ms": latency_ms(max(seconds) if seconds else None)}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ticket_url(connect_url: str, session: str) -> str:
    return f"{connect_url.split('/pools/')[0]}/sessions/{session}/ticket/"


async def _post(http: aiohttp.ClientSession, url: str, headers: dict, body=None):
    async with http.post(url, headers=headers, json=body) as answer:
        data = await answer.read()
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {}
        return answer.status, parsed if isinstance(parsed, dict) else {}


async def _one(http: aiohttp.ClientSession, loop, request: dict, intended: float,
               timeout_s: float) -> tuple[float, str, str | None, bool]:
    """(latency from the intended start, outcome, desktop handed out, pending at first)."""
    pending = False
    try:
        async with asyncio.timeout_at(intended + timeout_s):
            headers = {"X-Forwarded-For": request["forwarded_for"]}
            token = request.get("token")
            if token is None:
                login = request["login"]
                status, body = await _post(http, login["url"], headers, {
                    "username": login["username"], "password": login["password"]})
                if status != 200 or "token" not in body:
                    return loop.time() - intended, f"login {status}", None, False
                token = body["token"]
            headers["Authorization"] = f"Token {token}"
            status, body = await _post(http, request["url"], headers)
            if status == 202:
                pending, session = True, body.get("session")
                while status == 202:
                    await asyncio.sleep(float(body.get("retry_after") or 1))
                    status, body = await _post(http, _ticket_url(request["url"], session),
                                               headers)
            outcome = "ok" if status == 200 else f"status {status}"
            return (loop.time() - intended, outcome,
                    body.get("desktop") if status == 200 else None, pending)
    except TimeoutError:
        return math.inf, "timeout", None, pending
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return loop.time() - intended, type(error).__name__, None, pending


async def run(plan: dict) -> dict:
    """Run one step of the plan: every request on its schedule, then wait for the last."""
    requests, rate, timeout_s = plan["requests"], float(plan["rate"]), plan["timeout_s"]
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=plan["connections"], limit_per_host=0,
                                     ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=aiohttp.ClientTimeout(total=None)) as http:
        cpu_before = cpu_seconds()
        t0 = loop.time() + 0.05
        intended = schedule(len(requests), rate, t0)
        tasks, late = [], 0.0
        for request, due in zip(requests, intended):
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late = max(late, loop.time() - due)
            tasks.append(asyncio.create_task(_one(http, loop, request, due, timeout_s)))
        results = await asyncio.gather(*tasks)
        # The last answer, time-outs at the moment the client gave up on them.
        last = max((due + (timeout_s if math.isinf(r[0]) else r[0])
                    for due, r in zip(intended, results)), default=t0)
        cpu = cpu_seconds() - cpu_before
    latencies = [r[0] for r in results]
    outcomes = Counter(r[1] for r in results)
    ok = outcomes.pop("ok", 0)
    desktops = [r[2] for r in results if r[2] is not None]
    # Achieved: tickets per second over the step's scheduled length, or until its last
    # answer when that came later.
    wall = max(last - t0, len(requests) / rate)
    return {
        "requests": len(requests),
        "offered_per_s": rate,
        "scheduled_s": round(len(requests) / rate, 2),
        "wall_s": round(wall, 2),
        "tickets": ok,
        "achieved_per_s": round(ok / wall, 2),
        "errors": sum(outcomes.values()),
        "errors_by_kind": dict(outcomes),
        "pending_first_answer": sum(1 for r in results if r[3]),
        "latency": latency_summary(latencies),
        "same_desktop_twice_in_answers": len(desktops) - len(set(desktops)),
        "client_cpu_s": round(cpu, 3),
        "client_late_start_max_ms": round(late * 1000, 1),
    }


def main() -> None:
    plan_path, result_path = sys.argv[1:3]
    with open(plan_path) as plan:
        result = asyncio.run(run(json.load(plan)))
    with open(result_path, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
