"""Load test: N visitors ask for predictions while a training run is in progress; a table and JSON.

python scripts/loadtest.py                            # 50 clients, 30 s, the tutorial MLP training
python scripts/loadtest.py --clients 8 --duration 5 --train-size 5000
python scripts/loadtest.py --arch cnn                 # the CNN preset training instead
python scripts/loadtest.py --route photo              # uploaded photos through the queue instead
python scripts/loadtest.py --app-env GRADIO_ANALYTICS_CACHE_FREQUENCY=1000000   # try a server setting
python scripts/loadtest.py --url http://127.0.0.1:7860/ --pid 1234    # an app that is already running

Unless --url is given, it starts `python app.py` (from --app-dir, default this checkout) on a free port
of 127.0.0.1 with a copy of the shipped model, waits until a prediction answers, starts a training run
through the API (all 60,000 images, 100 epochs: it outlasts the test) and waits until its first epoch
has ended, so that tracing and one-off allocations are behind it. Then the clients start: --warmup
seconds not counted, then --duration seconds measured. At the end it stops the run (`stop` endpoint).

A client is one visitor with the app open. --route says what a visitor does:
- draw (default): draws digits on the Draw tab, sending exactly what the page (ui/draw.js) sends: at the
  end of each stroke, one POST to /gradio_api/component_server calling the drawing surface's
  `classify_strokes` server function with {"seq", "strokes"}: every stroke drawn so far, as [x, y] points
  in pixels of the 560 px canvas (to 0.1 px, as the page rounds them). It skips Gradio's queue and is
  answered in the same HTTP response with {"seq", "html"}, the answer panel's HTML. After a digit's last
  stroke the visitor clears the canvas, which the page also sends (no strokes: the empty state, no
  model), and draws the next. The digits are mnist_core.drawn's drawn-digit set as stroke points: MNIST
  test digits traced to strokes (1 to 13 of them) and redrawn with varied size, slant and place, then
  hand-made strokes, 520 in all. Each answer must carry the seq sent, a digit and ten probability bars
  adding up to 100% (the empty state after a clear); the digit is checked against the truth after the
  last stroke only (after the first stroke of a 4, a 1 is a fine answer).
- photo: what API scripts send (the page's photo upload takes the same path, upload then queue, to
  `predict_photo`): POST the PNG to /gradio_api/upload, POST
  /gradio_api/call/predict, read the server-sent events of /gradio_api/call/predict/<event_id> until
  `complete`; the latency covers all three. The images are MNIST test digits made to look like scans
  (dark ink on light paper, 140 px), in 400 noisy variants. The answer is a gr.Label value.
After each answer a visitor pauses --interval seconds (jittered 0.5-1.5x so that clients never march in
step) and sends the next request: the time a person takes to draw the next stroke. A digit takes one to
three strokes of about half a second each, hence a default of 0.5 s: 50 such visitors offer up to 100
requests a second, far more than 50 people would on a real day. The page does not wait for an answer
before sending the next stroke (it shows only the newest answer); a visitor here does, so a server slower
than the pause sees somewhat less than a person would send: --interval is the knob for more. Each visitor
keeps one Gradio session (session_hash), as a browser tab or a gradio_client Client does.
The digits are prepared up front and sent in turn, so the server sees distinct inputs as it would from
real visitors. The clients run on asyncio + httpx (a gradio dependency) in --processes worker processes,
not on 50 gradio_client Clients, each of which would hold threads and its own SSE stream in one GIL-bound
process. Each worker reports its CPU time and event-loop lag, so one can tell when the load generator,
not the server, adds the delay.

Errors: any exception, an HTTP error, an `error` event, a timeout, an answer in the error style, or an
answer that is not ten probabilities of the digits 0-9 summing to 1. Latency: of the requests the model
answers (strokes, photos); that of the clears is reported beside it. Memory: the server's VmRSS
(/proc/<pid>/status) at the end of the warm-up and at the end of the run. Targets (the issue's): 0 errors,
p95 <= 250 ms, memory flat (growth <= 50 MB over the measured run), with training running throughout and
>= 90% of the digits read right.
The server's CPU is also split by thread name (/proc/<pid>/task), to show who takes the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appserver import AppServer, copy_shipped_model  # noqa: E402  (scripts/appserver.py)
from benchmark import proc_status_bytes  # noqa: E402  (scripts/benchmark.py)

from mnist_core import drawn  # noqa: E402
from mnist_core.config import PRESETS  # noqa: E402
from mnist_core.data import load_mnist  # noqa: E402
from mnist_core.preprocess import CANVAS_SIDE  # noqa: E402

API = "gradio_api"
# The targets.
TARGET_ERRORS = 0
TARGET_P95_MS = 250.0
TARGET_GROWTH_MB = 50.0  # MB = 10**6 bytes of VmRSS, end of the run minus end of the warm-up
TARGET_RIGHT = 0.9  # share of answers naming the digit shown: the answers are real, not just well formed
START_SECONDS = 180  # gradio, then TensorFlow and the model, on a busy 2-core machine
TRAIN_START_SECONDS = 300  # the CNN's first epoch on all 60,000 images, on a busy 2-core machine
REQUEST_TIMEOUT = 30.0
SAMPLE_EVERY = 1.0  # seconds between samples of the server's memory and training status
LAG_TICK = 0.01  # the event-loop lag probe sleeps this long and records how late it wakes
SCAN_SIZE = 140
DRAWPAD = "drawpad"  # elem_id of the Draw tab's surface (ui/draw.py); its id is read from GET /config
SERVER_FUNCTION = "classify_strokes"  # the surface's server function the page calls per stroke
VARIANTS = 400  # distinct photos, or traced digits (the hand-made ones come on top), sent in turn
DIGITS = 40  # MNIST test digits they are made from (the first 40: every class 2-6 times)


# --- images -------------------------------------------------------------------------------------


def scanned_digits(data_path: str | None, variants: int = VARIANTS, seed: int = 0) -> list[tuple[bytes, int]]:
    """(PNG bytes, true digit) pairs: MNIST test digits as scans on light paper, each with its own noise."""
    data = load_mnist(data_path)
    rng = np.random.default_rng(seed)
    inks = [
        np.asarray(
            Image.fromarray(image).resize((SCAN_SIZE, SCAN_SIZE), Image.Resampling.BICUBIC), np.float32
        )
        for image in data.x_test[:DIGITS]
    ]
    pairs = []
    for index in range(variants):
        ink = inks[index % DIGITS]
        paper = rng.uniform(215, 245) - ink / 255 * rng.uniform(170, 200) + rng.normal(0, 4, ink.shape)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        pairs.append((buffer.getvalue(), int(data.y_test[index % DIGITS])))
    return pairs


def drawn_strokes(data_path: str | None, variants: int = VARIANTS, seed: int = 0) -> list[tuple[list, int]]:
    """(strokes, true digit) pairs: digits as the Draw tab's page sends them, [x, y] canvas pixels.

    mnist_core.drawn's drawn-digit set (`variants` MNIST test digits traced to strokes, then hand-made
    strokes) on the 560 px canvas, points rounded to 0.1 px as ui/draw.js rounds them.
    """
    data = load_mnist(data_path)
    pairs = []
    for item in drawn.drawn_items(data, count=variants, seed=seed):
        strokes = drawn.item_strokes(item, data, CANVAS_SIDE)
        pairs.append(([[[round(x, 1), round(y, 1)] for x, y in stroke] for stroke in strokes], item.label))
    return pairs


# --- Gradio's REST API --------------------------------------------------------------------------


class ApiError(RuntimeError):
    """The app answered an API call with an error event or an HTTP error."""


def _events(lines: list[str]) -> tuple[str, str]:
    """The last (event, data) pair of server-sent event lines."""
    event, data = "", ""
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
    return event, data


class SessionStream:
    """One Gradio session's events as the page's own client runs them: each event is joined with
    POST /queue/join, and the messages of all of them come back on the session's one GET /queue/data
    stream, told apart by event id. The /call/<name>/<event_id> stream is a session's whole stream too:
    two calls of one session in flight there would each read the other's messages (a poll answered with
    a Train call's outputs, or a stream left waiting for a completion the other took)."""

    # base URL -> api_name -> (fn_index, which inputs the API leaves out: states), from GET /config
    _events: dict[str, dict[str, tuple[int, list[bool]]]] = {}

    def __init__(self, http: httpx.AsyncClient, base: str, session: str):
        self.http, self.base, self.session = http, base, session
        self.pending: dict[str, tuple[str, asyncio.Future]] = {}  # event id -> (api_name, its outputs)
        self.early: dict[str, dict] = {}  # completions read before their join's answer came back
        self.reader: asyncio.Task | None = None

    async def event(self, api_name: str) -> tuple[int, list[bool]]:
        if self.base not in self._events:
            response = await self.http.get(f"{self.base}config")
            response.raise_for_status()
            config = response.json()
            skipped = {c["id"]: bool(c.get("skip_api")) for c in config.get("components", [])}
            self._events[self.base] = {
                d["api_name"]: (d["id"], [skipped.get(i, False) for i in d["inputs"]])
                for d in config.get("dependencies", [])
                if d.get("api_name")
            }
        if api_name not in self._events[self.base]:
            raise ApiError(f"{api_name}: the page has no such event")
        return self._events[self.base][api_name]

    async def call(self, api_name: str, data: list) -> list:
        """The event's outputs, given the inputs its API takes (as for /call: no states, the page's
        client sends those as null and the server keeps them)."""
        fn_index, skipped = await self.event(api_name)
        values = iter(data)
        inputs = [None if skip else next(values, None) for skip in skipped]
        body = {"data": inputs, "fn_index": fn_index, "session_hash": self.session}
        response = await self.http.post(f"{self.base}{API}/queue/join", json=body)
        if response.status_code != 200:
            raise ApiError(f"{api_name}: HTTP {response.status_code} {response.text[:200]}")
        event_id = response.json()["event_id"]
        future = asyncio.get_running_loop().create_future()
        if event_id in self.early:
            self._complete(api_name, future, self.early.pop(event_id))
        else:
            self.pending[event_id] = (api_name, future)
            if self.reader is None or self.reader.done():
                self.reader = asyncio.create_task(self._read())
        return await future

    @staticmethod
    def _complete(api_name: str, future: asyncio.Future, message: dict) -> None:
        output = message.get("output") or {}
        if future.done():
            return
        if message.get("success"):
            future.set_result(output.get("data"))
        else:
            future.set_exception(ApiError(f"{api_name}: {json.dumps(output)}"))

    def _fail_all(self, why: str) -> None:
        for api_name, future in self.pending.values():
            if not future.done():
                future.set_exception(ApiError(f"{api_name}: {why}"))
        self.pending.clear()

    async def _read(self) -> None:
        """Read the session's stream while events are pending; the server closes it when none is."""
        try:
            while self.pending:
                url = f"{self.base}{API}/queue/data"
                async with self.http.stream("GET", url, params={"session_hash": self.session}) as stream:
                    if stream.status_code != 200:
                        self._fail_all(f"the session's stream answered HTTP {stream.status_code}")
                        return
                    async for line in stream.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        message = json.loads(line[5:])
                        kind = message.get("msg")
                        if kind == "process_completed":
                            api_name, future = self.pending.pop(message.get("event_id"), (None, None))
                            if future is None:
                                self.early[message.get("event_id")] = message
                            else:
                                self._complete(api_name, future, message)
                        elif kind == "unexpected_error":
                            self._fail_all(str(message.get("message")))
                        elif kind == "close_stream":
                            break
        except Exception as failure:  # the stream broke: every pending call fails with it
            self._fail_all(f"{type(failure).__name__}: {failure}")


_STREAMS: dict[tuple[int, str, str], SessionStream] = {}


async def call_async(
    http: httpx.AsyncClient, base: str, api_name: str, data: list, session: str | None = None
) -> list:
    """Run one event and return its outputs; ApiError on an error event. With a session, through that
    session's one stream (SessionStream), as a page does; without, through /call/<api_name>, whose stream
    is then the event's own."""
    if session is not None:
        key = (id(http), base, session)
        if len(_STREAMS) > 4096:  # forget the sessions with nothing in flight (one request each, say)
            for old in [k for k, stream in _STREAMS.items() if not stream.pending and stream.reader.done()]:
                del _STREAMS[old]
        if key not in _STREAMS or _STREAMS[key].http is not http:
            _STREAMS[key] = SessionStream(http, base, session)
        return await _STREAMS[key].call(api_name, data)
    body = {"data": data}
    response = await http.post(f"{base}{API}/call/{api_name}", json=body)
    response.raise_for_status()
    event_id = response.json()["event_id"]
    async with http.stream("GET", f"{base}{API}/call/{api_name}/{event_id}") as stream:
        stream.raise_for_status()
        pending: list[str] = []
        async for line in stream.aiter_lines():
            if line:
                pending.append(line)
                continue
            event, payload = _events(pending)
            pending = []
            if event == "complete":
                return json.loads(payload)
            if event == "error":
                raise ApiError(f"{api_name}: {payload}")
    raise ApiError(f"{api_name}: the event stream ended without a result")


async def upload_async(http: httpx.AsyncClient, base: str, png: bytes) -> dict:
    """Upload one PNG; the FileData an image input takes."""
    response = await http.post(f"{base}{API}/upload", files={"files": ("digit.png", png, "image/png")})
    response.raise_for_status()
    return {"path": response.json()[0], "orig_name": "digit.png", "meta": {"_type": "gradio.FileData"}}


async def predict_async(http: httpx.AsyncClient, base: str, png: bytes, session: str | None = None) -> dict:
    """The app's `predict` for one image: a gr.Label value."""
    return (await call_async(http, base, "predict", [await upload_async(http, base, png)], session))[0]


def drawpad_id(config: dict, elem_id: str = DRAWPAD, function: str = SERVER_FUNCTION) -> int:
    """The id of the Draw tab's surface (or another gr.HTML with a server function) in the page's
    GET /config: where its server function is called."""
    for component in config.get("components", []):
        props = component.get("props") or {}
        if props.get("elem_id") == elem_id and function in (props.get("server_fns") or []):
            return component["id"]
    raise RuntimeError(f"the page has no component #{elem_id} with the server function {function}")


async def drawpad_id_async(
    http: httpx.AsyncClient, base: str, elem_id: str = DRAWPAD, function: str = SERVER_FUNCTION
) -> int:
    """drawpad_id of the running page's GET /config."""
    response = await http.get(f"{base}config")
    response.raise_for_status()
    return drawpad_id(response.json(), elem_id, function)


def stroke_body(component: int, seq: int, strokes: list, session: str, visitor: str | None = None) -> dict:
    """The JSON the page POSTs to /component_server at the end of a stroke (Gradio's JS client's shape)."""
    data = {"seq": seq, "strokes": strokes, **({"visitor": visitor} if visitor else {})}
    return {"data": data, "component_id": component, "fn_name": SERVER_FUNCTION, "session_hash": session}


async def classify_strokes_async(
    http: httpx.AsyncClient,
    base: str,
    component: int,
    seq: int,
    strokes: list,
    session: str,
    visitor: str | None = None,
) -> dict:
    """What the Draw tab sends at the end of a stroke: {seq, html}, answered in the same HTTP response."""
    body = stroke_body(component, seq, strokes, session, visitor)
    response = await http.post(f"{base}{API}/component_server", json=body)
    if response.is_error:
        raise ApiError(f"{SERVER_FUNCTION}: HTTP {response.status_code}: {response.text[:200]}")
    return response.json()


ROUTE_NAMES = {
    "draw": "strokes (component_server)",
    "photo": "photos (upload, /call/predict)",
}


CONTROL_SESSION = "loadtest-control"  # the one visitor that starts, watches and stops the training run


def call(base: str, api_name: str, data: list | None = None, session: str | None = CONTROL_SESSION) -> list:
    """A blocking API call, for the few control calls (train, status, stop), as one visitor."""

    async def once():
        async with _http(base, 2) as http:
            return await call_async(http, base, api_name, data or [], session)

    return asyncio.run(once())


def _http(base: str, connections: int) -> httpx.AsyncClient:
    # trust_env=False: never through a proxy from the environment, the app is on this machine.
    # keepalive_expiry under uvicorn's 5 s keep-alive: a connection the server is closing is never reused
    # (that race answered a request with ReadError, as a browser would retry it on a new connection).
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=2.0
    )
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits, trust_env=False)


def check_answer(answer) -> tuple[str | None, str | None]:
    """(error, predicted digit): an error when the answer is not ten probabilities of 0-9 adding up to 1."""
    if not isinstance(answer, dict) or not isinstance(answer.get("confidences"), list):
        return f"not a label: {str(answer)[:120]}", None
    confidences = {str(c.get("label")): c.get("confidence") for c in answer["confidences"]}
    if sorted(confidences) != [str(d) for d in range(10)]:
        return f"expected the ten digits, got {sorted(confidences)}", None
    values = list(confidences.values())
    if not all(isinstance(v, int | float) and 0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 0.01:
        return f"probabilities do not add up to 1: {values}", None
    return None, answer.get("label")


_ERROR = re.compile(r'class="[^"]*\berror\b[^"]*"')
_DIGIT = re.compile(r'<div class="digit">(\d)</div>')
_BAR = re.compile(r'<span class="d">(\d)</span><span class="bar"><span style="width:([\d.]+)%')
_TEXT = re.compile(r"<[^>]+>")


def check_drawing(answer, seq: int, drawn: bool) -> tuple[str | None, str | None]:
    """(error, digit shown) of a classify_strokes answer, read from its HTML as the page shows it.

    It must answer the drawing sent (its seq), show no error and, where something is `drawn`, a digit whose
    bar is the longest of ten adding up to 100%; where nothing is, the empty state.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("html"), str):
        return f"not a drawing's answer: {str(answer)[:120]}", None
    page = answer["html"]
    if _ERROR.search(page):
        return f"error shown: {' '.join(_TEXT.sub(' ', page).split())[:200]}", None
    if answer.get("seq") != seq:
        return f"answer for drawing {answer.get('seq')!r}, sent {seq}", None
    digit = _DIGIT.search(page)
    if not drawn:
        empty = digit is None and 'id="answer"' in page
        return (None, None) if empty else (f"not the empty state: {page[:120]}", None)
    if digit is None:
        return f"no digit shown: {page[:120]}", None
    bars = {d: float(width) for d, width in _BAR.findall(page)}
    if sorted(bars) != [str(d) for d in range(10)]:
        return f"expected a bar for each of the ten digits, got {sorted(bars)}", None
    if abs(sum(bars.values()) - 100) > 1 or bars[digit[1]] < max(bars.values()) - 0.1:
        return f"the bars ({bars}) do not add up to 100% with {digit[1]} the longest", None
    return None, digit[1]


# --- the clients --------------------------------------------------------------------------------


def steps(route: str, item) -> list[tuple[object, int | None, str]]:
    """The requests a visitor sends for one digit: (payload, digit to check or None, kind).

    draw: one per stroke, each with all the strokes so far (as the page sends them), the digit checked
    after the last; then the Clear before the next digit, which the page sends too. photo: one upload.
    """
    payload, truth = item
    if route == "photo":
        return [(payload, truth, "photo")]
    last = len(payload) - 1
    return [(payload[: k + 1], truth if k == last else None, "stroke") for k in range(last + 1)] + [
        ([], None, "clear")
    ]


def new_session(rng: random.Random) -> str:
    """A session_hash, as a page or gradio_client makes one up for itself."""
    return f"loadtest-{rng.getrandbits(48):012x}"


async def start_session(http, base, session: str) -> str:
    """What the page's load does: the visitor id the server hands this session."""
    return (await call_async(http, base, "session", [None], session))[0]


async def ask(http, base, route, component, payload, seq, session, who=None) -> tuple[str | None, str | None]:
    """One request of a visitor (`who`: their id, which the page puts in each drawing): (error, digit)."""
    if route == "photo":
        return check_answer(await predict_async(http, base, payload, session))
    answer = await classify_strokes_async(http, base, component, seq, payload, session, who)
    return check_drawing(answer, seq, drawn=bool(payload))


async def visitor(http, base, route, component, items, first, interval, rng, end, records, session) -> None:
    """One visitor, digit after digit: send, wait for the answer, pause, until `end` (time.time())."""
    await asyncio.sleep(rng.uniform(0, interval))  # arrivals spread over the first interval
    turn, seq = first, 0  # seq: the page numbers its drawings, and checks the answer's number
    own = new_session(rng) if session == "visitor" else None
    who = await start_session(http, base, own) if own and route == "draw" else None
    while time.time() < end:
        item = items[turn % len(items)]
        turn += 1
        for payload, truth, kind in steps(route, item):
            if time.time() >= end:
                break
            seq += 1
            # Per request: the photo route sends none (Gradio makes one); the server function needs one.
            fresh = own or (new_session(rng) if route == "draw" else None)
            sent = time.time()
            started = time.perf_counter()
            try:
                error, shown = await ask(http, base, route, component, payload, seq, fresh, who)
            except Exception as failure:
                error, shown = f"{type(failure).__name__}: {failure}"[:300], None
            right = None if truth is None or error else shown == str(truth)
            records.append((sent, time.perf_counter() - started, error, right, kind))
            await asyncio.sleep(interval * rng.uniform(0.5, 1.5))


async def lag_probe(start: float, end: float, lags: list[float]) -> None:
    """How late the event loop wakes from a short sleep during the measured window."""
    while time.time() < end:
        asyncio_started = time.perf_counter()
        await asyncio.sleep(LAG_TICK)
        if time.time() >= start:
            lags.append(time.perf_counter() - asyncio_started - LAG_TICK)


async def _run_clients(
    base, route, component, items, clients, interval, session, seed, begin, start, end
) -> dict:
    rng = random.Random(seed)
    records: list[tuple] = []
    lags: list[float] = []
    await asyncio.sleep(max(0.0, begin - time.time()))
    async with _http(base, 2 * clients + 4) as http:
        probe = asyncio.create_task(lag_probe(start, end, lags))
        tasks = [
            visitor(
                http,
                base,
                route,
                component,
                items,
                rng.randrange(len(items)),
                interval,
                random.Random(rng.random()),
                end,
                records,
                session,
            )
            for _ in range(clients)
        ]
        cpu = asyncio.create_task(_cpu_between(start, end))
        await asyncio.gather(*tasks)
        await probe
        cpu_seconds = await cpu
    return {"records": records, "lags": lags, "cpu_seconds": cpu_seconds}


async def _cpu_between(start: float, end: float) -> float:
    """This process's CPU seconds over [start, end] (time.time())."""
    await asyncio.sleep(max(0.0, start - time.time()))
    before = time.process_time()
    await asyncio.sleep(max(0.0, end - time.time()))
    return time.process_time() - before


def client_worker(args: tuple) -> dict:
    """One worker process: its share of the clients on one event loop."""
    return asyncio.run(_run_clients(*args))


# --- the server ---------------------------------------------------------------------------------


@contextlib.contextmanager
def running_app(
    data_path: str | None, app_dir: Path, env: dict | None = None, budget: bool = True
) -> Iterator[tuple[str, int]]:
    """`python app.py` in app_dir on a free port, with a copy of the shipped model: (url, pid)."""
    with tempfile.TemporaryDirectory(prefix="loadtest-") as folder:
        models = copy_shipped_model(Path(folder, "models"))
        # Gradio's uploads go to a folder of ours, so the run can say how much they add on disk.
        environment = {"GRADIO_TEMP_DIR": str(Path(folder, "gradio")), **(env or {})}
        # The run the load test starts outlasts it on purpose: no compute budget here.
        limits = ["--max-run-minutes", "600"] if budget else []  # the classroom keeps the app's own
        with AppServer(models, data_path, args=limits, env=environment, app_dir=app_dir) as app:
            yield app.url, app.pid


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a process (VmRSS), None without a pid or /proc."""
    return None if pid is None else proc_status_bytes(pid, "VmRSS")


def thread_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds per thread name of a process, numbered names folded (tf_worker_3 -> tf_worker_#)."""
    totals: dict[str, float] = {}
    if pid is None:
        return totals
    ticks = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                group = name.rstrip("0123456789").rstrip("_-") + ("_#" if name[-1:].isdigit() else "")
                totals[group] = totals.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def folder_size(path: Path | None) -> tuple[int, int] | None:
    """(files, bytes) under a folder."""
    if path is None or not path.exists():
        return None
    files, size = 0, 0
    for file in path.rglob("*"):
        with contextlib.suppress(OSError):  # Gradio's own temporary files come and go meanwhile
            if file.is_file():
                size += file.stat().st_size
                files += 1
    return files, size


def wait_until_ready(base: str, route: str, item) -> tuple[float, int | None]:
    """(seconds until a prediction of `item` answers, the drawing surface's id for the draw route).

    The model loads in the background: until then the page's answer says so in the error style, and
    /predict answers with an error event.
    """
    started = time.monotonic()
    rng = random.Random(0)

    async def once():
        async with _http(base, 2) as http:
            component = await drawpad_id_async(http, base) if route == "draw" else None
            # The whole digit at once: all its strokes, or the photo.
            error, _ = await ask(http, base, route, component, item[0], 1, new_session(rng))
            if error:
                raise ApiError(error)
            return component

    while True:
        try:
            component = asyncio.run(once())
            return time.monotonic() - started, component
        except (ApiError, httpx.HTTPError) as error:
            if time.monotonic() - started > START_SECONDS:
                raise RuntimeError(f"the app never answered a prediction: {error}") from error
            time.sleep(0.5)


def start_training(base: str, args) -> dict:
    """Start the run and wait until its first epoch has ended; its status.

    The first epoch traces and compiles the training and validation steps and allocates their buffers;
    from the second epoch on, the run repeats itself, so memory measured then should stay flat.
    """
    preset = PRESETS[args.arch]
    settings = [args.arch, args.epochs, args.batch_size or preset.batch_size]
    settings += [preset.learning_rate, args.train_size]
    call(base, "train", settings)
    deadline = time.monotonic() + TRAIN_START_SECONDS
    while time.monotonic() < deadline:
        status = call(base, "training_status")[0]
        if status.get("status") != "running":
            raise RuntimeError(f"the training run is not running: {status}")
        if status.get("val_accuracy") is not None:
            return status
        time.sleep(0.5)
    raise RuntimeError(f"the training run's first epoch did not end within {TRAIN_START_SECONDS} s")


def stop_training(base: str) -> dict:
    """Stop the run and wait until it has ended; its last status."""
    with contextlib.suppress(ApiError):  # "no run in progress" when it has already ended
        call(base, "stop")
    deadline = time.monotonic() + 120
    status = call(base, "training_status")[0]
    while status.get("status") in ("running", "stopping", "saving") and time.monotonic() < deadline:
        time.sleep(0.5)
        status = call(base, "training_status")[0]
    return status


# --- one run ------------------------------------------------------------------------------------


def measure(base: str, pid: int | None, component, items, args, uploads: Path | None = None) -> dict:
    """Warm-up, then the measured window; the report."""
    begin = time.time() + 2.0  # worker processes start meanwhile
    start = begin + args.warmup
    end = start + args.duration
    shares = [
        args.clients // args.processes + (i < args.clients % args.processes) for i in range(args.processes)
    ]
    jobs = [
        (base, args.route, component, items, share, args.interval, args.session, args.seed + index)
        + (begin, start, end)
        for index, share in enumerate(shares)
        if share
    ]
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(jobs)) as pool:
        pending = pool.map_async(client_worker, jobs)
        samples, marks = [], {}
        next_sample = time.time()
        while time.time() < end or not pending.ready():
            now = time.time()
            for mark, when in (("start", start), ("end", end)):
                if now >= when and mark not in marks:
                    marks[mark] = {
                        "rss": rss_bytes(pid),
                        "threads": thread_cpu(pid),
                        "disk": folder_size(uploads),
                    }
            if next_sample <= now < end + SAMPLE_EVERY:
                next_sample += SAMPLE_EVERY
                try:
                    status = call(base, "training_status")[0]
                except Exception as error:  # reported as a gap in training, never a crash of the run
                    status = {"status": f"status call failed: {error}"}
                samples.append(
                    {
                        "t": round(now - start, 2),
                        "rss": rss_bytes(pid),
                        "status": status.get("status"),
                        "progress": status.get("progress"),
                        "epoch": status.get("epoch"),
                    }
                )
            time.sleep(0.05)
        results = pending.get()
    return report(results, samples, marks, start, end, args)


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def report(results: list[dict], samples: list[dict], marks: dict, start: float, end: float, args) -> dict:
    records = [r for result in results for r in result["records"] if start <= r[0] < end]
    warm = sum(1 for result in results for r in result["records"] if r[0] < start)
    # The model's answers (strokes, photos); clears answer without it, in a fraction of the time.
    latencies = [1000 * r[1] for r in records if r[4] != "clear"]
    clears = [1000 * r[1] for r in records if r[4] == "clear"]
    errors = [r[2] for r in records if r[2]]
    checked = [r[3] for r in records if r[3] is not None]  # digits whose truth is checked, answered
    kinds = {r[4] for r in records}
    lags = [1000 * lag for result in results for lag in result["lags"]]
    duration = end - start
    window = [s for s in samples if 0 <= s["t"] <= duration + 0.5]
    progress = [s["progress"] for s in window if s["progress"] is not None]
    running = bool(window) and all(s["status"] == "running" for s in window) and len(progress) >= 2
    running = running and progress[-1] > progress[0]
    before, after = marks.get("start", {}).get("rss"), marks.get("end", {}).get("rss")
    growth = None if before is None or after is None else (after - before) / 1e6
    threads = {}
    if marks.get("start", {}).get("threads"):
        first, last = marks["start"]["threads"], marks["end"]["threads"]
        threads = {name: round((last[name] - first.get(name, 0.0)) / duration, 3) for name in last}
        threads = dict(sorted(((n, c) for n, c in threads.items() if c >= 0.005), key=lambda kv: -kv[1]))
    disk = None
    if marks.get("start", {}).get("disk") and marks.get("end", {}).get("disk"):
        (files0, bytes0), (files1, bytes1) = marks["start"]["disk"], marks["end"]["disk"]
        disk = {"files_added": files1 - files0, "mb_added": (bytes1 - bytes0) / 1e6, "files_total": files1}
    p95 = _percentile(latencies, 95)
    right = sum(checked) / len(checked) if checked else 0.0
    targets = {
        "errors": {"value": len(errors), "target": f"= {TARGET_ERRORS}", "met": len(errors) == TARGET_ERRORS},
        "p95_ms": {
            "value": p95,
            "target": f"<= {TARGET_P95_MS:g}",
            "met": p95 is not None and p95 <= TARGET_P95_MS,
        },
        "memory_growth_mb": {
            "value": growth,
            "target": f"<= {TARGET_GROWTH_MB:g}",
            "met": None if growth is None else growth <= TARGET_GROWTH_MB,
        },
        "training_throughout": {"value": running, "target": "yes", "met": running},
        "answers_right": {"value": right, "target": f">= {TARGET_RIGHT:.0%}", "met": right >= TARGET_RIGHT},
    }
    return {
        "route": args.route,
        "clients": args.clients,
        "session": args.session,
        "app_env": args.app_env,
        "processes": len(results),
        "interval_s": args.interval,
        "duration_s": duration,
        "warmup_s": args.warmup,
        "requests": len(records),
        "requests_by_kind": {kind: [r[4] for r in records].count(kind) for kind in sorted(kinds)},
        "warmup_requests": warm,
        "requests_per_second": len(records) / duration,
        "offered_per_second": args.clients / args.interval,  # with instant answers; the ceiling
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "answers_right": right,
        "answers_checked": len(checked),
        "latency_ms": {
            "p50": _percentile(latencies, 50),
            "p95": p95,
            "p99": _percentile(latencies, 99),
            "max": max(latencies, default=None),
            "mean": float(np.mean(latencies)) if latencies else None,
        },
        "clear_latency_ms": {"p50": _percentile(clears, 50), "p95": _percentile(clears, 95)},
        "memory": {
            "rss_before_mb": None if before is None else before / 1e6,
            "rss_after_mb": None if after is None else after / 1e6,
            "growth_mb": growth,
            "rss_max_mb": max((s["rss"] for s in window if s["rss"]), default=0) / 1e6 or None,
            "samples_mb": [round(s["rss"] / 1e6, 1) for s in window if s["rss"]],
        },
        "training": {
            "arch": args.arch,
            "epochs": args.epochs,
            "train_size": args.train_size,
            "running_throughout": running,
            "progress_start": progress[0] if progress else None,
            "progress_end": progress[-1] if progress else None,
            "statuses": sorted({str(s["status"]) for s in window}),
        },
        "cpu": {
            "server_cores_by_thread": threads,
            "server_cores": round(sum(threads.values()), 3) if threads else None,
            "client_cores": sum(result["cpu_seconds"] for result in results) / duration,
            "client_loop_lag_ms": {"p50": _percentile(lags, 50), "p99": _percentile(lags, 99)},
        },
        "uploads_on_disk": disk,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
    }


# --- output -------------------------------------------------------------------------------------


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _mb(value) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def print_report(result: dict) -> None:
    latency, memory, cpu = result["latency_ms"], result["memory"], result["cpu"]
    targets = result["targets"]
    met = {True: "yes", False: "NO", None: "n/a"}
    lag = cpu["client_loop_lag_ms"]
    kinds = result["requests_by_kind"]
    requests = f"{result['requests']}"
    if "clear" in kinds:
        requests += f" ({kinds.get('stroke', 0)} strokes, {kinds['clear']} clears)"
    clears, has_clears = result["clear_latency_ms"], "clear" in kinds
    rows = [
        ("route", ROUTE_NAMES[result["route"]], "", None),
        ("clients (processes)", f"{result['clients']} ({result['processes']})", "", None),
        ("pause between a client's requests", f"{result['interval_s']:g} s x 0.5-1.5", "", None),
        ("measured / warm-up", f"{result['duration_s']:g} s / {result['warmup_s']:g} s", "", None),
        ("requests", requests, "", None),
        ("requests per second", f"{result['requests_per_second']:.1f}", "", None),
        ("  offered at most (clients / pause)", f"{result['offered_per_second']:.1f}", "", None),
        ("errors", f"{result['errors']}", targets["errors"]["target"], targets["errors"]["met"]),
        ("latency p50", _ms(latency["p50"]), "", None),
        ("latency p95", _ms(latency["p95"]), targets["p95_ms"]["target"] + " ms", targets["p95_ms"]["met"]),
        ("latency p99 / max", f"{_ms(latency['p99'])} / {_ms(latency['max'])}", "", None),
        *(
            [("  clears (no model) p50 / p95", f"{_ms(clears['p50'])} / {_ms(clears['p95'])}", "", None)]
            * has_clears
        ),
        (
            "answers right",
            f"{result['answers_right']:.1%} of {result['answers_checked']}",
            targets["answers_right"]["target"],
            targets["answers_right"]["met"],
        ),
        (
            "server RSS before -> after",
            f"{_mb(memory['rss_before_mb'])} -> {_mb(memory['rss_after_mb'])}",
            "",
            None,
        ),
        (
            "server RSS growth",
            "-" if memory["growth_mb"] is None else f"{memory['growth_mb']:+.1f} MB",
            targets["memory_growth_mb"]["target"] + " MB",
            targets["memory_growth_mb"]["met"],
        ),
        (
            "training running throughout",
            "yes" if result["training"]["running_throughout"] else "no",
            "yes" if "training_throughout" in targets else "",
            targets.get("training_throughout", {}).get("met"),
        ),
        (
            "server CPU (cores)",
            "-" if cpu["server_cores"] is None else f"{cpu['server_cores']:.2f}",
            "",
            None,
        ),
        ("load generator CPU (cores)", f"{cpu['client_cores']:.2f}", "", None),
        ("load generator loop lag p50 / p99", f"{_ms(lag['p50'])} / {_ms(lag['p99'])}", "", None),
    ]
    print(f"{'what':36} {'figure':26} {'target':16} met?")
    for what, figure, target, ok in rows:
        print(f"{what:36} {figure:26} {target:16} {met[ok] if target else ''}")
    if cpu["server_cores_by_thread"]:
        top = ", ".join(
            f"{name} {cores:.2f}" for name, cores in list(cpu["server_cores_by_thread"].items())[:6]
        )
        print(f"server CPU by thread (cores): {top}")
    if result["uploads_on_disk"]:
        disk = result["uploads_on_disk"]
        print(f"Gradio's upload folder: +{disk['files_added']} files, +{disk['mb_added']:.1f} MB in the run")
    for example in result["error_examples"]:
        print(f"error: {example}")
    print("targets met" if result["all_met"] else "targets NOT met")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent visitors (default 50)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before measuring (default 5)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.5, help="a client's pause after each answer, s (default 0.5)"
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="worker processes for the clients (default 2)"
    )
    parser.add_argument(
        "--arch", choices=sorted(PRESETS), default="mlp", help="network trained meanwhile (default mlp)"
    )
    parser.add_argument(
        "--epochs", type=int, default=100, help="epochs asked for; stopped at the end (default 100)"
    )
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--train-size", type=int, default=60_000, help="training images (default all)")
    parser.add_argument(
        "--route",
        choices=sorted(ROUTE_NAMES),
        default="draw",
        help="what each visitor sends: a digit's strokes, one request per stroke, as the Draw tab does "
        "(default), or an uploaded photo through the queue, as API scripts do",
    )
    parser.add_argument(
        "--session",
        choices=("visitor", "request"),
        default="visitor",
        help="one Gradio session per visitor, as a browser tab or gradio_client has (default), or a new "
        "one per request, as a bare REST call without session_hash gets",
    )
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the app started here (repeatable), e.g. to try a setting",
    )
    parser.add_argument("--no-training", action="store_true", help="predictions only, for comparison")
    parser.add_argument("--url", help="an app that is already running (default: start one)")
    parser.add_argument("--pid", type=int, help="with --url: the app's process, for its memory")
    parser.add_argument("--app-dir", type=Path, default=ROOT, help="checkout whose app.py to start")
    parser.add_argument("--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="default: benchmark-results/<scenario>.json")
    parser.add_argument(
        "--scenario",
        choices=("drawing", "classroom"),
        default="drawing",
        help="drawing: --clients visitors drawing while a model trains (default); classroom: open pages "
        "that poll, draw and queue runs, with hostile clients (scripts/classroom.py)",
    )
    import classroom  # scripts/classroom.py, which builds on this module

    classroom.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.scenario == "classroom":
        return run_classroom(args)
    args.json = args.json or Path("benchmark-results/loadtest.json")
    if args.clients < 1 or args.duration <= 0 or args.interval < 0 or args.processes < 1 or args.warmup < 0:
        parser.error("--clients and --processes need >= 1, --duration > 0, --interval and --warmup >= 0")
    args.processes = min(args.processes, args.clients)
    data_path = args.data or os.environ.get("MNIST_DATA")
    items = drawn_strokes(data_path) if args.route == "draw" else scanned_digits(data_path)
    with contextlib.ExitStack() as stack:
        if args.url:
            base, pid, uploads = args.url.rstrip("/") + "/", args.pid, None
        else:
            app_env = dict(item.split("=", 1) for item in args.app_env)
            base, pid = stack.enter_context(running_app(data_path, args.app_dir.resolve(), app_env))
            uploads = None  # set below from the process's environment
            with contextlib.suppress(OSError):
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                found = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"GRADIO_TEMP_DIR=")]
                uploads = Path(found[0].decode()) if found else None
        ready, component = wait_until_ready(base, args.route, items[0])
        print(f"app: {base} (pid {pid}); model ready after {ready:.1f} s")
        rss_idle = rss_bytes(pid)
        training = None
        if not args.no_training:
            training = start_training(base, args)
            print(f"training: {args.arch} on {args.train_size} images, in epoch {training['epoch']}")
        try:
            result = measure(base, pid, component, items, args, uploads)
        finally:
            final = stop_training(base) if training else None
    if args.no_training:
        result["targets"].pop("training_throughout")
        result["all_met"] = all(t["met"] for t in result["targets"].values())
    result["memory"]["rss_idle_mb"] = None if rss_idle is None else rss_idle / 1e6
    result["training"]["final_status"] = None if final is None else final.get("status")
    result["url"] = base
    result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if hasattr(os, "getloadavg"):
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0


def run_classroom(args) -> int:
    """--scenario classroom: a fresh app (or --url), the class, the report (scripts/classroom.py)."""
    if args.duration == 30.0:
        args.duration = 300.0  # the five minutes, unless asked otherwise
    args.json = args.json or Path("benchmark-results/classroom.json")
    args.data = args.data or os.environ.get("MNIST_DATA")
    with contextlib.ExitStack() as stack:
        if args.url:
            base, pid = args.url.rstrip("/") + "/", args.pid
        else:
            base, pid = stack.enter_context(running_app(args.data, args.app_dir.resolve(), {}, budget=False))
        items = drawn_strokes(args.data)
        ready, _ = wait_until_ready(base, "draw", items[0])
        print(f"app: {base} (pid {pid}); model ready after {ready:.1f} s")
        import classroom

        result = classroom.run(args, base, pid)
    return 0 if result["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
