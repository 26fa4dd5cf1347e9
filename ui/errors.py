"""The one place where the core's exceptions become messages for the person: gr.Error, never a traceback."""

import functools
import html
import logging

import gradio as gr

from mnist_core.collection import SetFullError
from mnist_core.config import BusyError, RunLimitError, TrainingDisabledError
from mnist_core.data import MnistDataError, MnistNotFoundError
from mnist_core.store import ModelFileError
from mnist_core.studio import ModelNotReady
from mnist_core.visitors import RateLimitError

logger = logging.getLogger("mnist_studio")

TITLES = (
    (BusyError, "A training run is in progress"),
    (RunLimitError, "Training limit reached"),
    (TrainingDisabledError, "Training is turned off"),
    (MnistNotFoundError | MnistDataError, "MNIST data not available"),
    (ModelFileError, "Model file problem"),
    (ModelNotReady, "Model still loading"),
    (RateLimitError, "A moment, please"),
    (SetFullError, "Your set is full"),
    (ValueError | FileNotFoundError, "Invalid input"),
)


def title(error: Exception) -> str:
    """A short heading for the message box; unexpected errors are logged with their traceback."""
    for kind, heading in TITLES:
        if isinstance(error, kind):
            return heading
    logger.exception("unexpected error", exc_info=error)
    return "Unexpected error"


def message(error: Exception) -> str:
    """The error's text, safe to show in the page."""
    return html.escape(str(error), quote=False)


def friendly_errors(fn):
    """Turn the core's exceptions into gr.Error messages, never a traceback in the page."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            raise gr.Error(message(error), title=title(error), print_exception=False) from None

    return wrapper
