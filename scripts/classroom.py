"""The classroom load test: a class behind one link, with a few visitors trying to take the server down.

python scripts/loadtest.py --scenario classroom                  # 30 visitors, 5 minutes
python scripts/loadtest.py --scenario classroom --visitors 6 --trainers 2 --hostile 1 --duration 25

Every well-behaved visitor is an open page: it starts its session as the page's load does (/session),
polls once a second as the page's watcher does (the server function `changed`, one plain POST, and
only when its answer changed the page's refresh, /poll through Gradio's queue, with its own session, so
that the poll skips what that page already shows; a poll's time is the two together), and draws: one
stroke about every second, sent as the page sends it (the drawing surface's server function, with the
visitor's id), the digit checked after its last stroke, then a clear. --trainers of them also queue
one small training run each, at a random moment of the first third, and watch it through their polls.
--hostile clients (a process of their own) cycle through attacks: a 12000 x 12000 PNG as a data: URL
photo, a 2 MB JSON body, 10,001 stroke points, a direct POST to /run/<name> that skips the queue, a
burst of drawings faster than a person draws, someone else's Stop, a model name that is a path. Each
must get a clear refusal.

Targets (the issue's): for the well-behaved visitors 0 errors, stroke answer p95 <= 250 ms, poll p95
<= 500 ms, server RSS growth <= 150 MB over the run; every queued run trains in the order it was queued
and its owner sees its curves; every attack refused clearly. A table, and benchmark-results/classroom.json.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import multiprocessing
import random
import re
import statistics
import time
from pathlib import Path

import loadtest
from loadtest import (
    API,
    REQUEST_TIMEOUT,
    ApiError,
    _http,
    check_drawing,
    classify_strokes_async,
    drawn_strokes,
    drawpad_id_async,
    rss_bytes,
    start_session,
)
from PIL import Image

from mnist_core.visitors import PREDICTION_BURST, PREDICTIONS_PER_SECOND

TARGET_STROKE_P95_MS = 250.0
TARGET_POLL_P95_MS = 500.0
TARGET_GROWTH_MB = 150.0
STROKE_SECONDS = 1.0  # a person draws a stroke about every second
POLL_SECONDS = 1.0  # the page's watcher (ui/page.py, ui/watch.js)
WATCHER, WATCH_FUNCTION = "page-watch", "changed"  # its elem_id and server function
# Small presets, as a class would pick them: (arch, epochs, batch size, learning rate, training images).
RUNS = [("mlp", 2, 64, 0.001, 6000), ("cnn", 1, 128, 0.003, 3000)]


async def call_async(http, base, api_name, data, session):
    """loadtest.call_async within REQUEST_TIMEOUT in all: an event stream that only sends heartbeats
    would otherwise keep a visitor waiting for ever."""
    return await asyncio.wait_for(loadtest.call_async(http, base, api_name, data, session), REQUEST_TIMEOUT)


def children_rss(pid: int | None) -> int | None:
    """Resident memory of the server's child processes in all: its training worker (mnist_core.worker)."""
    if pid is None:
        return None
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(rss_bytes(int(child)) or 0 for child in children)
    return total


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Unchanged(Exception):
    """The watcher's answer: nothing this page shows has changed, so the page does not refresh."""


async def page_visitor(
    index, http, base, component, watcher, items, start, end, log, trainer_run=None, drain=0.0
):
    """One open page for the whole run: its polls and its strokes, and maybe one training run."""
    rng = random.Random(index)
    session = f"class-{index}-{rng.getrandbits(40):010x}"
    who = await start_session(http, base, session)
    watched = {"run": None, "running_at": None, "finished_at": None, "status": None, "curve_points": 0}

    async def polls():
        await asyncio.sleep(rng.uniform(0, POLL_SECONDS))

        # A trainer's page stays open after the run's end until its run has finished (or `drain` passed).
        def waiting() -> bool:  # a trainer's page stays open until its run has ended
            ended = watched["status"] in ("finished", "stopped", "failed", "cancelled") or not watched["run"]
            return bool(trainer_run) and not ended and time.time() < end + drain

        key = None
        while time.time() < end or waiting():
            sent, began = time.time(), time.perf_counter()
            error = None
            try:
                # The watcher's question (one plain POST), then the page's refresh only if it changed.
                body = {"data": {"visitor": who, "key": key}, "component_id": watcher}
                body.update(fn_name=WATCH_FUNCTION, session_hash=session)
                response = await http.post(f"{base}{API}/component_server", json=body)
                if response.is_error:
                    raise ApiError(f"{WATCH_FUNCTION}: HTTP {response.status_code}: {response.text[:200]}")
                answer = response.json()
                if not isinstance(answer, dict) or not isinstance(answer.get("key"), str):
                    raise ApiError(f"{WATCH_FUNCTION}: not a key: {str(answer)[:200]}")
                if answer["key"] == key:
                    raise Unchanged
                key = answer["key"]
                outputs = await call_async(http, base, "poll", [False], session)
                curves, status = outputs[2], outputs[4]  # the live view, the status
                if isinstance(status, dict) and status.get("run") == watched["run"] and watched["run"]:
                    watched["status"] = status["status"]
                    if status["status"] in ("running", "saving", "finished") and not watched["running_at"]:
                        watched["running_at"] = time.time()
                    if status["status"] == "finished" and not watched["finished_at"]:
                        watched["finished_at"] = time.time()
                if isinstance(curves, str) and watched["run"]:
                    points = sum(
                        int(n) for n in re.findall(r'data-series="train" data-points="(\d+)"', curves)
                    )
                    watched["curve_points"] = max(watched["curve_points"], points)
            except Unchanged:
                pass
            except Exception as failure:
                error = f"{type(failure).__name__}: {failure}"[:300]
            elapsed = time.perf_counter() - began
            if start <= sent < end:
                log["poll"].append((elapsed, error))
            await asyncio.sleep(max(0.0, POLL_SECONDS - elapsed))

    async def strokes():
        await asyncio.sleep(rng.uniform(0, STROKE_SECONDS))
        seq, turn = 0, rng.randrange(len(items))
        while time.time() < end:
            drawing, truth = items[turn % len(items)]
            turn += 1
            for count in [*range(1, len(drawing) + 1), 0]:  # stroke after stroke, then a clear
                if time.time() >= end:
                    return
                seq += 1
                sent, began = time.time(), time.perf_counter()
                try:
                    answer = await classify_strokes_async(
                        http, base, component, seq, drawing[:count], session, who
                    )
                    error, shown = check_drawing(answer, seq, drawn=count > 0)
                except Exception as failure:
                    error, shown = f"{type(failure).__name__}: {failure}"[:300], None
                if sent >= start and count:
                    right = shown == str(truth) if count == len(drawing) and not error else None
                    log["stroke"].append((time.perf_counter() - began, error, right))
                await asyncio.sleep(STROKE_SECONDS * rng.uniform(0.7, 1.3))

    async def train():
        await asyncio.sleep(rng.uniform(0, (end - time.time()) / 3))
        began = time.perf_counter()
        try:
            queued = (await call_async(http, base, "train", list(trainer_run), session))[0]
            watched.update(run=queued["run"], queued_at=time.time(), queued_status=queued["status"])
        except Exception as failure:
            watched["error"] = f"{type(failure).__name__}: {failure}"[:300]
        watched["train_call_seconds"] = time.perf_counter() - began

    tasks = [polls(), strokes()] + ([train()] if trainer_run else [])
    await asyncio.gather(*tasks)
    if trainer_run:
        watched["config"] = list(trainer_run)
        log["runs"].append(watched)


async def teacher_demo(http, base, timeout: float = 300.0) -> None:
    """Before the class: the teacher trains each small preset once, as a demo. The first run of each
    network in a process traces its graphs and grows the allocator's pools (~250 MB for the CNN); memory
    is measured from after that, so that growth means a leak, not a first run."""
    session = "classroom-teacher"
    await start_session(http, base, session)
    for settings in RUNS:
        await call_async(http, base, "train", list(settings), session)
        deadline = time.time() + timeout
        while True:
            status = (await call_async(http, base, "training_status", [], session))[0]
            if status["status"] in ("finished", "stopped", "failed", "cancelled"):
                break
            if time.time() > deadline:
                raise ApiError(f"the teacher's run did not end in {timeout:.0f} s: {status}")
            await asyncio.sleep(0.5)
        print(f"teacher's demo run: {settings[0]} {status['status']}", flush=True)


def bomb_data_url() -> str:
    """A 12000 x 12000 white PNG (~170 kB) as a data: URL: 144 MP when decoded."""
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000), 1).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def hostile_worker(job: tuple) -> list:
    """The hostile clients in a process of their own, as attackers are other machines: what their side
    costs (a 2 MB body to send, 40 requests at once) never delays the class's requests in the load
    generator's event loop. The attacks' outcomes."""
    base, component, end, count = job

    async def attackers():
        log = {"attacks": []}
        bomb = bomb_data_url()
        async with _http(base, 60 * count + 10) as http:
            await asyncio.gather(*(hostile(i, http, base, component, end, log, bomb) for i in range(count)))
        return log["attacks"]

    return asyncio.run(attackers())


async def hostile(index, http, base, component, end, log, bomb: str):
    """Cycle through the attacks until `end`; each outcome: (attack, refused clearly, what came back)."""
    session = f"hostile-{index}"
    point = [280.0, 80.0]
    # The big bodies are encoded once: an attacker replays bytes, it does not rebuild them.
    big = {"data": {"seq": 1, "strokes": [[point] * 150_000]}, "component_id": component}
    big = json.dumps({**big, "fn_name": "classify_strokes", "session_hash": session}).encode()
    many = {"data": {"seq": 1, "strokes": [[point] * 10_001]}, "component_id": component}
    many = json.dumps({**many, "fn_name": "classify_strokes", "session_hash": session}).encode()
    as_json = {"content-type": "application/json"}

    async def photo_bomb():
        # Gradio refuses a data: URL as a file's path before any handler runs, with no message of its own
        # ("error": null); what counts is that it is refused at once and decodes nothing.
        file = {"path": bomb, "url": bomb, "orig_name": "bomb.png", "meta": {"_type": "gradio.FileData"}}
        began = time.perf_counter()
        try:
            await call_async(http, base, "predict_photo", [file, None], session)
        except ApiError:
            return time.perf_counter() - began < 2.0, f"refused in {time.perf_counter() - began:.2f} s"
        return False, "answered"

    async def big_body():
        response = await http.post(f"{base}{API}/component_server", content=big, headers=as_json)
        return response.status_code == 413, f"HTTP {response.status_code}"

    async def many_points():
        response = await http.post(f"{base}{API}/component_server", content=many, headers=as_json)
        html = response.json()["html"]
        return "at most 10,000 points" in html, re.sub(r"<[^>]+>", " ", html)[:120]

    async def skip_the_queue():
        response = await http.post(f"{base}{API}/run/predict_strokes", json={"data": [[[point]]]})
        return response.status_code in (
            403,
            404,
            405,
        ) and "queue" in response.text, f"HTTP {response.status_code}"

    async def burst():
        body = {"data": {"seq": 1, "strokes": [[point, [280.0, 480.0]]]}, "component_id": component}
        body.update(fn_name="classify_strokes", session_hash=session)
        began = time.perf_counter()
        answers = await asyncio.gather(
            *(http.post(f"{base}{API}/component_server", json=body) for _ in range(40))
        )
        seconds = time.perf_counter() - began
        slowed = sum("too many drawings" in a.json()["html"] for a in answers)
        # Refused clearly: no more answered than the rate limit lets through in the burst's time (all
        # clients from one address share one budget), every other one told why.
        allowed = PREDICTION_BURST + PREDICTIONS_PER_SECOND * seconds
        return 40 - slowed <= allowed, f"{slowed} of 40 slowed down in {seconds:.1f} s"

    async def stop_others():
        status = (await call_async(http, base, "stop", [], session))[0]
        return status.get("run") is None, f"status {status.get('status')}"

    async def path_as_model():
        try:
            await call_async(http, base, "select_model", ["../../etc/passwd", None, None], session)
        except ApiError as error:
            return "not in the list of choices" in str(error) or "invalid model name" in str(error), str(
                error
            )[:120]
        return False, "answered"

    attacks = [photo_bomb, big_body, many_points, skip_the_queue, burst, stop_others, path_as_model]
    turn = index
    while time.time() < end:
        attack = attacks[turn % len(attacks)]
        turn += 1
        try:
            refused, said = await attack()
        except Exception as failure:
            refused, said = False, f"{type(failure).__name__}: {failure}"[:200]
        log["attacks"].append((attack.__name__, refused, said))
        await asyncio.sleep(0.5)


async def run_class(base, pid, args, items) -> dict:
    log = {"poll": [], "stroke": [], "runs": [], "attacks": [], "rss": [], "worker_rss": []}
    async with _http(base, 4 * args.visitors + 20) as http:
        component = await drawpad_id_async(http, base)
        watcher = await drawpad_id_async(http, base, WATCHER, WATCH_FUNCTION)
        await teacher_demo(http, base)
        begin = time.time()
        start, end = begin + args.warmup, begin + args.warmup + args.duration
        trainers = {i: RUNS[i % len(RUNS)] for i in range(min(args.trainers, args.visitors))}

        async def memory():
            while time.time() < end:
                await asyncio.sleep(max(0.0, min(5.0, start - time.time()) if time.time() < start else 5.0))
                if time.time() >= start:
                    log["rss"].append(rss_bytes(pid))
                    log["worker_rss"].append(children_rss(pid))

        tasks = [
            page_visitor(
                i, http, base, component, watcher, items, start, end, log, trainers.get(i), args.drain
            )
            for i in range(args.visitors)
        ]
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            attacks = pool.apply_async(hostile_worker, [(base, component, end, args.hostile)])
            await asyncio.gather(*tasks, memory())
            log["attacks"] = await asyncio.to_thread(attacks.get, REQUEST_TIMEOUT + 60)
    return log


def report(log: dict, args) -> dict:
    strokes = [elapsed for elapsed, error, _ in log["stroke"] if not error]
    polls = [elapsed for elapsed, error in log["poll"] if not error]
    errors = [error for _, error, _ in log["stroke"] if error] + [error for _, error in log["poll"] if error]
    rights = [right for _, error, right in log["stroke"] if right is not None]
    rss = [value for value in log["rss"] if value]
    growth = (rss[-1] - rss[0]) / 1e6 if len(rss) >= 2 else None
    # Every trainer's run, the ones whose Train call failed too (they have no number and keep the error).
    runs = sorted(log["runs"], key=lambda run: (run.get("run") is None, run.get("run") or 0))
    queued = [run for run in runs if run.get("run")]
    in_order = all(
        later["running_at"] and earlier["finished_at"] and later["running_at"] >= earlier["running_at"]
        for earlier, later in zip(queued, queued[1:], strict=False)
    )
    trained = all(run.get("status") == "finished" for run in runs) and len(queued) == min(
        args.trainers, args.visitors
    )
    curves = all(run["curve_points"] > 0 for run in runs)
    finished = sum(run.get("status") == "finished" for run in runs)
    attacks: dict[str, list] = {}
    for name, refused, said in log["attacks"]:
        attacks.setdefault(name, []).append((refused, said))
    refused_all = all(all(ok for ok, _ in outcomes) for outcomes in attacks.values()) and bool(
        attacks or not args.hostile
    )

    def ms(values, q):
        value = _percentile(values, q)
        return None if value is None else value * 1000

    targets = {
        "errors": {"value": len(errors), "target": "= 0", "met": not errors},
        "stroke_p95_ms": {"value": ms(strokes, 0.95), "target": f"<= {TARGET_STROKE_P95_MS:g}",
                          "met": bool(strokes) and ms(strokes, 0.95) <= TARGET_STROKE_P95_MS},
        "poll_p95_ms": {"value": ms(polls, 0.95), "target": f"<= {TARGET_POLL_P95_MS:g}",
                        "met": bool(polls) and ms(polls, 0.95) <= TARGET_POLL_P95_MS},
        "rss_growth_mb": {"value": growth, "target": f"<= {TARGET_GROWTH_MB:g}",
                          "met": growth is not None and growth <= TARGET_GROWTH_MB},
        "runs_trained_in_order": {"value": f"{finished} of {len(runs)}", "target": "all, in order",
                                  "met": trained and in_order},
        "owners_saw_their_curves": {"value": curves, "target": "yes", "met": curves},
        "attacks_refused_clearly": {"value": refused_all, "target": "yes", "met": refused_all},
    }  # fmt: skip
    return {
        "visitors": args.visitors,
        "trainers": args.trainers,
        "hostile": args.hostile,
        "duration_s": args.duration,
        "strokes": len(log["stroke"]),
        "polls": len(log["poll"]),
        "stroke_ms": {"p50": ms(strokes, 0.5), "p95": ms(strokes, 0.95), "p99": ms(strokes, 0.99)},
        "poll_ms": {"p50": ms(polls, 0.5), "p95": ms(polls, 0.95), "p99": ms(polls, 0.99)},
        "right": statistics.mean(rights) if rights else None,
        "errors_sample": errors[:5],
        "rss_mb": {"first": rss[0] / 1e6 if rss else None, "last": rss[-1] / 1e6 if rss else None},
        # The training worker is replaced after a few runs: its memory is bounded, not flat.
        "worker_rss_mb": {"peak": max(log["worker_rss"], default=0) / 1e6},
        "runs": [{**run, "error": run.get("error")} for run in runs],
        "attacks": {name: {"tries": len(o), "refused": sum(ok for ok, _ in o), "said": o[-1][1],
                           "not_refused": [said for ok, said in o if not ok][:3]}
                    for name, o in attacks.items()},
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
    }  # fmt: skip


def print_report(result: dict) -> None:
    print(f"classroom: {result['visitors']} visitors ({result['trainers']} training), "
          f"{result['hostile']} hostile, {result['duration_s']:g} s: "
          f"{result['strokes']} strokes, {result['polls']} polls")  # fmt: skip
    for name, value in (("stroke answer", result["stroke_ms"]), ("page poll", result["poll_ms"])):
        shown = " / ".join("-" if v is None else f"{v:.0f}" for v in value.values())
        print(f"  {name:14} p50 / p95 / p99 ms: {shown}")
    if result["right"] is not None:
        print(f"  digits read right: {result['right']:.1%}")
    rss = result["rss_mb"]
    if rss["first"] is not None:
        print(f"  server RSS {rss['first']:.0f} -> {rss['last']:.0f} MB; training worker's peak "
              f"{result['worker_rss_mb']['peak']:.0f} MB")  # fmt: skip
    for run in result["runs"]:
        failed = f", Train answered {run['error']}" if run.get("error") else ""
        print(
            f"  run {run.get('run') or '-'} {run['config'][0]}: {run.get('status')} "
            f"(saw {run['curve_points']} curve points{failed})"
        )
    for name, outcome in result["attacks"].items():
        print(f"  attack {name:15} refused {outcome['refused']} of {outcome['tries']}: {outcome['said']}")
        for said in outcome["not_refused"]:
            print(f"    not refused: {said}")
    for name, target in result["targets"].items():
        value = target["value"]
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        print(f"  {name:26} {shown:>14}  target {target['target']:16} {'yes' if target['met'] else 'NO'}")
    print("targets met" if result["all_met"] else "targets NOT met")


def run(args, base: str, pid: int | None) -> dict:
    items = drawn_strokes(args.data, variants=200)
    log = asyncio.run(run_class(base, pid, args, items))
    result = report(log, args)
    print_report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.json}")
    return result


def add_arguments(parser) -> None:
    parser.add_argument("--visitors", type=int, default=30, help="classroom: open pages (default 30)")
    parser.add_argument("--trainers", type=int, default=6, help="classroom: of them, queue a run (default 6)")
    parser.add_argument("--hostile", type=int, default=2, help="classroom: attacking clients (default 2)")
    parser.add_argument(
        "--drain",
        type=float,
        default=240.0,
        help="classroom: seconds to wait for the last runs (default 240)",
    )
