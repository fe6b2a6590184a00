"""Write the figures section of docs/benchmarks.md from bench/results/*.json.

Only the text between the two FIGURES markers is replaced; the rest of the document (the
explanations and plans) is written by hand.

    .venv/bin/python -m bench.report
"""

from __future__ import annotations

import json
import sys

from bench.common import RESULTS_DIR, ROOT

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- FIGURES:START (bench/report.py) -->", "<!-- FIGURES:END -->"


def load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def row(*cells) -> str:
    return "| " + " | ".join("–" if cell is None else str(cell) for cell in cells) + " |"


def ran(result: dict) -> str:
    m = result["machine"]
    start = " / ".join(map(str, m.get("load_avg_at_start", [])))
    end = " / ".join(map(str, m["load_avg"]))
    return (f"*Ran {result['finished_at']} on {m['nproc']} × {m['cpu_model']}, "
            f"{m['ram_gb']} GB RAM, PostgreSQL {m['postgresql'].split()[0]}; load average "
            f"(1, 5, 15 min) at the start: {start}, at the end: {end}.*")


def _errors(step: dict) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in step["errors_by_kind"].items())
    return f"{step['errors']} ({kinds})" if kinds else "0"


def _storm_rows(steps: list[dict]) -> list[str]:
    lines = [row("offered /s", "achieved /s", "p50 ms", "p99 ms", "max ms", "errors",
                 "web", "workers", "PostgreSQL", "Redis", "libvirtd", "servers", "client",
                 "load"),
             row(*["---:"] * 14)]
    for step in steps:
        latency, cpu = step["latency"], step["cpu_ms_per_connect"]
        offered = f"**{step['offered_per_s']:g}**" if step["sustained"] else \
            f"{step['offered_per_s']:g}"
        lines.append(row(offered, step["achieved_per_s"], latency["p50_ms"],
                         latency["p99_ms"], latency["max_ms"], _errors(step), cpu["web"],
                         cpu["workers"], cpu["postgres"], cpu["redis"], cpu["libvirtd"],
                         cpu["servers"], cpu["client"], step["load_avg_1m"]))
    return lines


def login_storm(r: dict) -> list[str]:
    if "sweeps" not in r:
        return ["### 1. Login storm: results of the former closed-loop storm; run "
                "`bench/run login_storm`", ""]
    head = r["headline"]
    one, ten = head["one_tenant"], head["ten_tenants"]
    rates = ", ".join(map(str, r["rates"]))

    def rate(value) -> str:
        return f"{value:g}/s" if value else "none"

    def ratio(value) -> str | None:
        return None if value is None else f"**{value}**"

    lines = [f"### 1. Login storm (open loop: {rates} connects/s, {r['step_seconds']:g} s "
             f"a step, {r['users']:,} users, {r['hosts']} simulated hosts)", "",
             f"Highest rate sustained (p99 ≤ {r['p99_limit_ms']:g} ms from the intended "
             "start, no error):", "",
             row("", "product", "floor", "product ÷ floor"), row("---", "---:", "---:", "---:"),
             row("one tenant", f"**{rate(one['product_per_s'])}**", rate(one["floor_per_s"]),
                 ratio(one["product_to_floor"])),
             row("ten tenants", f"**{rate(ten['product_per_s'])}**",
                 rate(ten["floor_per_s"]), ratio(ten["product_to_floor"])),
             "",
             "Per step: CPU ms per ticket of each component (servers = web + workers + "
             "PostgreSQL + Redis + libvirtd; the client apart), the 1-minute load average "
             "at the step's end; sustained rates in bold."]
    for name, sweep in r["sweeps"].items():
        lines += ["", f"**{name}**", "", *_storm_rows(sweep["steps"])]
    login, hash_cost, profile = r["login"], r["password_hash"], r["profiled_connects"]
    lines += [
        "", "**password login, then Connect** (open loop, one step)", "",
        *_storm_rows([login]),
        "",
        f"- Desktops handed out twice (from the database, step by step): "
        f"**{r['handed_out_twice']}**; the same desktop in two answers: "
        f"{r['same_desktop_twice_in_answers']}.",
        f"- One password check ({hash_cost['algorithm']}, {hash_cost['iterations']:,} "
        f"iterations): **{hash_cost['check_ms']} ms** of CPU, paid once per login.",
        f"- Connects one at a time, in process (median of {profile['connects']}): "
        f"{profile['queries']} queries, {profile['total_ms']} ms: "
        f"{profile['transaction_ms']} ms in the transaction under the tenant lock, "
        f"{profile['ticket_ms']} ms for the ticket (a round trip to a worker that asks "
        "libvirtd to set the password).",
        f"- Web tier: {r['web']['server']}, {r['web']['workers']} workers × "
        f"{r['web']['threads']} threads; Celery: {r['celery']['console']}, "
        f"{r['celery']['vdi']}; floor: {r['floor_server']}; client: {r['client']}; "
        f"tenant throttle {r['throttles']['tenant']}, user and login throttles at their "
        f"production defaults; {r['spares']:,} spares seeded in {r['seed_s']} s.",
        "", ran(r), ""]
    return lines


def provisioning(r: dict) -> list[str]:
    ref = r["reference"]
    rate = r["desktops_per_s"]
    cpu = r["cpu_ms_per_desktop"]
    return [
        f"### 2. Provisioning ({r['size']} desktops, {r['hosts']} simulated hosts, "
        f"{r['worker_processes']} worker processes)", "",
        row("", "desktops/s", "all running after", "CPU ms per desktop (workers + PostgreSQL)"),
        row("---", "---:", "---:", "---:"),
        row("product (autoscaler → operations → libvirtd)", rate, f"{r['elapsed_s']} s",
            f"{cpu['workers']} + {cpu['postgres']}"),
        row("floor: bare libvirt-python loop (overlay, define, start)", r["floor"]["per_s"],
            f"{r['floor']['elapsed_s']} s", "–"),
        "",
        f"- Ratio: **{r['floor_ratio']}×** the floor's time. Final states: {r['final_states']}; "
        f"the autoscaler recorded all rows in {r['rows_recorded_s']} s; per host: "
        f"{min(r['per_host'].values())}–{max(r['per_host'].values())} desktops.",
        f"- Operations one at a time, in process (median of "
        f"{r['profiled_operations']['operations']}): {r['profiled_operations']['queries']} "
        f"queries and {r['profiled_operations']['libvirt_calls']} libvirt calls, "
        f"{r['profiled_operations']['total_ms']} ms of which "
        f"{r['profiled_operations']['libvirt_ms']} ms waiting for libvirt.",
        f"- For comparison: oVirt's default prestart rate is 5 VMs per 5 minutes per pool "
        f"({ref['ovirt_prestart_per_s']}/s; the product is "
        f"{round(rate / ref['ovirt_prestart_per_s']):,}× that), OpenUDS about one per 19 s "
        f"per pool ({ref['openuds_per_s']}/s; "
        f"{round(rate / ref['openuds_per_s']):,}×). Those are throttles, not what their "
        "engines can do: the comparison says the product's own pacing is storm control per "
        "host, not a fixed trickle.",
        "", ran(r), ""]


def real_guests(r: dict) -> list[str]:
    warm = r["warm"]
    lines = [
        "### 3. Real guests (libvirtd + QEMU TCG, the lab's tiny guest)", "",
        row("", "p50", "p95", "n"), row("---", "---:", "---:", "---:"),
        row("Connect with a ready desktop (password set on the live domain)",
            f"{warm['p50_ms']} ms", f"{warm['p95_ms']} ms", warm["connects"]),
        "",
        row("Connect with no spare", "ticket", "guest ready line", "VNC answers", "usable",
            "provision queued / ran"),
        row("---", "---:", "---:", "---:", "---:", "---:")]
    for cold in r["cold"]:
        lines.append(row("product", f"{cold['ticket_s']} s", f"{cold['guest_ready_s']} s",
                         f"{cold['vnc_s']} s", f"**{cold['usable_s']} s**",
                         f"{cold['operation_queued_s']} s / {cold['operation_run_s']} s"))
    for bare in r["floor"]:
        lines.append(row("floor: `virsh start`", f"({bare['virsh_start_s']} s to return)",
                         f"{bare['guest_ready_s']} s", f"{bare['vnc_s']} s",
                         f"**{bare['usable_s']} s**", "–"))
    lines += ["", f"- Ratio (medians, usable console): **{r['floor_ratio']}×** the floor's "
              f"time ({r['cold_usable_median_s']} s against {r['floor_usable_median_s']} s).",
              f"- Warm passwords set on the live domain: {warm['passwords_set_on_live_domain']} "
              f"of {warm['connects']}; the worker's ticket task (the live domain's XML read "
              f"and `updateDeviceFlags`) took p50 {warm['ticket_task'].get('p50_ms')} ms, p95 "
              f"{warm['ticket_task'].get('p95_ms')} ms (every ticket task of the run, cold "
              "ones included).", "", ran(r), ""]
    return lines


def scale(r: dict) -> list[str]:
    counts = r["counts"]
    lines = [
        f"### 4. Scale ({counts['hosts']} hosts, {counts['tenants']:,} tenants, "
        f"{counts['users']:,} users, {counts['desktops']:,} desktops, "
        f"{counts['sessions']:,} past sessions)", "",
        f"Lists as the admin of the largest tenant ({r['big_tenant']['desktops']:,} desktops, "
        f"{r['big_tenant']['sessions']:,} sessions), 50 rows a page; in process through "
        "Django's test client with a real API token or portal login.", "",
        row("page", "p50 ms", "p99 ms", "queries"), row("---", "---:", "---:", "---:")]
    for name, figures in r["lists"].items():
        lines.append(row(f"{name}: `{figures['path']}`", figures["p50_ms"], figures["p99_ms"],
                         figures["queries"]))
    rec = r["reconcile"]
    lines += [
        "",
        f"- Reconciliation, one pass over {rec['hosts']} hosts × "
        f"{rec['domains'] // max(1, rec['hosts'])} domains (listing from a stub at the driver "
        f"boundary): **{rec['elapsed_s']} s** ({rec['ms_per_host']} ms per host, "
        f"{rec['queries']} queries, {rec['changed']} changes).",
        f"- Floor: the desktops page's count and rows as bare SQL, p50 {r['floor']['p50_ms']} "
        f"ms. Ratio for the desktops list: **{r['floor_ratio']}×**.",
        f"- Seeding (bulk_create) took {r['seed_s']} s.",
        "", ran(r), ""]
    return lines


def memory(r: dict) -> list[str]:
    rest = r["at_rest"]
    storm = r.get("after_login_storm") or {}
    storm_rest = storm.get("at_rest") or {}
    prov = r.get("after_provisioning") or {}
    return [
        "### 5. Memory (RSS, MB)", "",
        row("process", "at rest", "after benchmark 1", "after benchmark 2"),
        row("---", "---:", "---:", "---:"),
        row("gunicorn web worker (gthread)", max(rest["web_workers"]),
            (storm.get("after") or {}).get("web_worker"), "–"),
        row("Celery worker, `console` queue (threads)", "–",
            (storm.get("after") or {}).get("console_worker"), "–"),
        row("Celery worker process (prefork)", max(rest["celery_processes"]), "–",
            max(prov.get("worker_processes_after") or [0]) or None),
        row("floor: a bare Python process with Django set up", r["floor_bare_django_mb"],
            "–", "–"),
        "",
        f"- Ratio, web worker at rest against the floor: **{r['floor_ratio']}×**. At rest in "
        f"benchmarks 1 and 2 themselves: web worker {storm_rest.get('web_worker')}, "
        f"console worker {storm_rest.get('console_worker')}, prefork "
        f"processes {prov.get('worker_processes_at_rest')}.",
        "", ran(r), ""]


SECTIONS = (("login_storm", login_storm), ("provisioning", provisioning),
            ("real_guests", real_guests), ("scale", scale), ("memory", memory))


def figures() -> str:
    lines = []
    for name, render in SECTIONS:
        result = load(name)
        lines += render(result) if result else [f"### {name}: not run yet", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    text = DOC.read_text()
    if START not in text or END not in text:
        sys.exit(f"{DOC} lacks the {START} … {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{figures()}{END}{tail}")
    print(f"==> figures written to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
