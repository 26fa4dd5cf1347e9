"""MNIST Studio: draw a digit for a live MNIST model, train new models and watch them learn, browse the data.

python app.py [--host H] [--port P] [--share] [--auth USER:PASS]
              [--data PATH] [--model PATH] [--models-dir DIR]
              [--no-train] [--max-runs-per-hour N] [--max-file-size SIZE]

The password can also come from the MNIST_STUDIO_AUTH environment variable (USER:PASS), so it need not sit
in the shell history. Every event has a stable api_name; `predict` takes one image file and returns the
ten probabilities, e.g. Client(url).predict(handle_file("digit.png"), api_name="/predict").
This file is the command line and the launch only; the page is built in ui/ (ui.page.build_demo).
"""

import argparse
import contextlib
import io
import logging
import os
import sys
from pathlib import Path

from mnist_core.runs import MAX_RUN_MINUTES
from mnist_core.studio import Studio
from mnist_core.visitors import IDLE_SECONDS
from ui.limits import app_kwargs, slow_login
from ui.page import CSS_PATHS, build_demo
from ui.workarounds import analytics_settings

ROOT = Path(__file__).resolve().parent
AUTH_ENV = "MNIST_STUDIO_AUTH"
SESSION_CAPACITY = 1000  # visitors' sessions kept in memory; the oldest are dropped beyond this
MAX_FILE_SIZE = "10mb"  # far above any photo of a digit; Gradio stops a bigger upload as it arrives
QUEUE_SIZE = 256  # events waiting in Gradio's queue at most: 30 open pages poll once a second
RUNS_PER_HOUR = 10  # each visitor's training runs per hour, by default


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """USER:PASS -> (user, password); None when no protection is asked for."""
    if not value:
        return None
    user, colon, password = value.partition(":")
    if not colon or not user or not password:
        raise ValueError(f"--auth / {AUTH_ENV} expects USER:PASS with both parts non-empty")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, help="port (default 7860, or the next free one)")
    parser.add_argument("--share", action="store_true", help="also create a temporary public link")
    parser.add_argument("--auth", metavar="USER:PASS", help=f"ask for this login (or set {AUTH_ENV})")
    parser.add_argument(
        "--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download)"
    )
    parser.add_argument("--model", type=Path, help="model to start with (default: MODELS_DIR/default.keras)")
    parser.add_argument(
        "--models-dir", type=Path, default=ROOT / "models", help="where models are listed and saved"
    )
    public = parser.add_argument_group("public demo (with --share)")
    public.add_argument(
        "--no-train", action="store_true", help="read-only demo: no Train tab, the training API refuses"
    )
    public.add_argument(
        "--max-runs-per-hour",
        type=positive_int,
        metavar="N",
        default=RUNS_PER_HOUR,
        help=f"training runs each visitor may start per hour (default {RUNS_PER_HOUR})",
    )
    public.add_argument(
        "--max-run-minutes",
        type=positive_float,
        default=MAX_RUN_MINUTES,
        metavar="M",
        help=f"compute budget of one training run (default {MAX_RUN_MINUTES:g}): a run estimated to take "
        "longer is refused, one that takes longer stops and keeps what it learned",
    )
    public.add_argument(
        "--idle-minutes",
        type=positive_float,
        default=IDLE_SECONDS / 60,
        metavar="M",
        help=f"a visitor not seen for this long is forgotten (default {IDLE_SECONDS / 60:g})",
    )
    public.add_argument(
        "--max-file-size",
        type=file_size,
        default=file_size(MAX_FILE_SIZE),
        metavar="SIZE",
        help=f"largest upload, e.g. 500kb or 10mb (default {MAX_FILE_SIZE}); bigger ones are refused",
    )
    return parser


SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}  # as Gradio counts them


def file_size(value: str) -> int:
    """argparse type: "500kb", "10mb", "2048" (bytes) -> bytes."""
    text = value.strip().lower()
    number = text.rstrip("kmgb")
    unit = text[len(number) :] or "b"
    if not number.isdigit() or int(number) < 1 or unit not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 500kb or 10mb (units: {', '.join(SIZE_UNITS)}), received {value!r}"
        )
    return int(number) * SIZE_UNITS[unit]


def positive_int(value: str) -> int:
    """argparse type: a whole number >= 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {value!r}")
    return int(value)


def positive_float(value: str) -> float:
    """argparse type: a number > 0."""
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not (number > 0 and number < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {value!r}")
    return number


def _share_failure(gradio_output: str) -> str:
    """Why Gradio could not create the share link, in a few words, from what it printed."""
    if "Missing file" in gradio_output:
        return "Gradio's tunnel program (frpc) is missing and could not be downloaded"
    if "Checksum mismatch" in gradio_output:
        return "Gradio's tunnel program (frpc) failed its checksum"
    return "the Gradio share server could not be reached"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    except ValueError as error:
        parser.error(str(error))
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    studio = Studio(
        args.models_dir,
        data_path=args.data,
        model_path=args.model,
        training=not args.no_train,
        max_runs_per_hour=args.max_runs_per_hour,
        max_run_minutes=args.max_run_minutes,
        idle_seconds=60.0 * args.idle_minutes,
        training_process=True,  # runs train in a worker process at a lower priority (mnist_core/worker.py)
    )
    demo = build_demo(studio, training=not args.no_train)
    analytics_settings()  # see ui/workarounds.py
    # api_open=False: events answer only through the queue, so its limits hold (POST /run/<name> would
    # skip them); max_size: events waiting at most, beyond which a visitor is told the server is busy.
    demo.queue(default_concurrency_limit=1, api_open=False, max_size=QUEUE_SIZE)
    printed = io.StringIO()
    try:
        # Gradio prints a multi-line notice when the share link fails; we say it in one line below.
        with contextlib.redirect_stdout(printed):
            demo.launch(
                server_name=args.host,
                server_port=args.port,
                share=args.share,
                auth=slow_login(*auth) if auth else None,
                app_kwargs=app_kwargs(),
                max_file_size=args.max_file_size,
                # Each API caller without a session gets a new one (~140 KB each); 10,000 kept by default.
                state_session_capacity=SESSION_CAPACITY,
                quiet=True,
                prevent_thread_lock=True,
                css_paths=CSS_PATHS,
                footer_links=["api", "gradio"],
            )
    except OSError as error:
        print(f"error: could not start the server: {error}", file=sys.stderr)
        return 2
    # Only now: TensorFlow's import, started earlier, would compete with the launch for both cores.
    studio.start_loading()  # TensorFlow and the model load while the page already answers
    print(f"MNIST Studio is running on {demo.local_url}", flush=True)
    if auth:
        print(f"login required: user {auth[0]!r}", flush=True)
    if args.share and demo.share_url:
        print(f"Public link: {demo.share_url}", flush=True)
    elif args.share:
        print(
            f"Share link could not be created: {_share_failure(printed.getvalue())} (no internet access?); "
            f"the app keeps serving locally on {demo.local_url}",
            flush=True,
        )
    with contextlib.suppress(KeyboardInterrupt):
        demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
