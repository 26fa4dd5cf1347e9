"""Every Gradio behaviour the app works around, with the version it was seen in and the test that fails
when the behaviour changes (tests/test_workarounds.py unless named). Nothing here patches Gradio: each
workaround is a setting, or a supported component chosen over another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GRADIO_VERSION = "6.31.0"


@dataclass(frozen=True)
class Workaround:
    behaviour: str  # what Gradio does
    workaround: str  # what the app does instead
    test: str  # the test that fails when Gradio's behaviour changes


WORKAROUNDS = (
    Workaround(
        "the queue rebuilds a pandas summary of its last 10,000 events after every event: 8.6 ms per event "
        "once the window is full, ~40% of a prediction's cost (scripts/loadtest.py)",
        "GRADIO_ANALYTICS_MAX_EVENTS and GRADIO_ANALYTICS_CACHE_FREQUENCY set to 1000 (analytics_settings)",
        "test_the_queue_reads_the_analytics_settings",
    ),
    Workaround(
        "gr.Image decodes every upload in full (and re-encodes it) before any handler runs, up to PIL's "
        "179-megapixel limit, whatever max_file_size says",
        "photos arrive through gr.File(type='filepath'), which hands the file over unread; mnist_core opens "
        "it within its own pixel budget",
        "test_gr_image_decodes_uploads_and_gr_file_does_not",
    ),
    Workaround(
        "gradio.components.base.server marks a server function by setting an attribute on it, which a "
        "bound method refuses (AttributeError)",
        "the Draw tab passes a plain function that calls its method (ui/draw.py, DrawTab.render)",
        "test_server_functions_must_be_plain_functions",
    ),
    Workaround(
        "gr.LinePlot draws no marker for a point and nothing for a series of one point (a one-epoch run's "
        "validation curve), and fixes its colour domain when it is first built",
        "the Train tab draws its curves as inline SVG (ui/charts.py)",
        "test_lineplot_still_has_no_markers",
    ),
    Workaround(
        "an output returned as gr.skip() is an empty update: Gradio builds a new component and its config "
        "for it in the session (~2 ms each); a poll that skips ten outputs cost ~22 ms of the server's "
        "one Python thread (py-spy, 10 open pages)",
        "the poll has four outputs: two HTML views of the Train tab, skipped only when unchanged, and the "
        "status line and JSON, always sent (ui/page.py, ui/train.py)",
        "test_a_skipped_output_builds_a_new_component",
    ),
    Workaround(
        "the stream of GET /gradio_api/call/<name>/<event_id> carries every event of the caller's session, "
        "not only its own: with two calls of one session in flight, one stream gets the other's result "
        "and the other a 404 (the page's own client reads one /queue/data stream per session instead)",
        "scripts/loadtest.py's visitors, which poll and train at once as a page does, run a session's "
        "events as the page does: POST /queue/join, one /queue/data stream, results told apart by event "
        "id (SessionStream)",
        "test_a_call_stream_carries_every_event_of_its_session",
    ),
    Workaround(
        "a component inside a tab that was never opened is not mounted: a gr.Timer there does not tick, "
        "and a gr.HTML there runs no script",
        "the page's watcher (a gr.HTML with its own timer, ui/watch.js) sits outside the tabs (ui/page.py)",
        "tests/test_browser.py::test_a_visitor_on_the_draw_tab_sees_another_choose_the_active_model",
    ),
)


def analytics_settings() -> None:
    """Shrink the queue's event-statistics window (read when the queue is made: call before queue())."""
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
