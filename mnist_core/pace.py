"""How fast a training run goes and how long it has left, from the times its callbacks see.

The progress line shows both: samples per second and the time left. Two costs of a run's first epoch are
paid once and must not be read as its pace: the training step's tracing (inside the epoch's first call
into TensorFlow) and the validation step's tracing (inside the first validation). A run's pace is
therefore its training rate since the first call of the current epoch, and a validation's cost is a later,
untraced validation's time; until there is one, an estimate from the training rate (a forward pass costs
about a third of a training step's forward and backward) capped by the traced first validation. The
epoch's slowest call counts as a typical one: in the first epoch, the last call also traces the last,
smaller batch (an MLP on 6,000 images: 0.45 s more than the whole of a later epoch), and elsewhere one
slow call is the machine's hiccup, not the run's pace.
Plain Python, no TensorFlow: tests drive it with a made-up clock.
"""

# A validation image costs about this many times less than a training image (forward pass only, at the
# larger validation batch); only used until a run has timed a validation that was not its first.
FORWARD_SPEEDUP = 3.0
# The first validation traces the validation step: about this share of what tracing the training step cost
# the first call (an MLP on 6,000 images: 0.5 s against 1.1 s; the validation step has no gradients).
VALIDATION_TRACE_SHARE = 0.5
# The same when both steps are compiled by XLA: the training step's program (a stack of steps in a loop,
# training.StackedSteps) costs far more to compile than the validation's (the tutorial MLP on 60,000
# images: 0.6 s against 3.5-4.4 s).
XLA_VALIDATION_TRACE_SHARE = 0.15


class Pace:
    """Rate and time left for `epochs` epochs of `samples` images in `steps` steps each, every epoch
    followed by a validation of `validation_samples` images; `xla`: both steps compiled by XLA."""

    def __init__(self, epochs: int, steps: int, samples: int, validation_samples: int, xla: bool = False):
        if min(epochs, steps, samples) < 1 or validation_samples < 0:
            raise ValueError(
                f"Pace needs epochs, steps and samples >= 1 and validation_samples >= 0, received "
                f"{epochs}, {steps}, {samples} and {validation_samples}"
            )
        self.epochs, self.steps, self.samples = epochs, steps, samples
        self.validation_samples = validation_samples
        self._trace_share = XLA_VALIDATION_TRACE_SHARE if xla else VALIDATION_TRACE_SHARE
        self.epoch = 0
        self._step = 0
        self._epoch_started = 0.0
        self._since: tuple[float, int] | None = None  # (time, step) at the end of the epoch's last call
        self._calls: list[tuple[int, float]] = []  # (steps, seconds) of each call after the epoch's first
        self._rate_of: tuple[int, float] | None = None  # (calls, rate): this epoch's rate over so many
        self._last_rate: float | None = None  # the last finished epoch's
        self._validations: list[float] = []
        self._first_call: tuple[int, float] | None = None  # (steps, seconds) of the run's first call
        self._now = 0.0

    def epoch_begin(self, now: float) -> None:
        self.epoch += 1
        self._epoch_started = self._now = now
        self._step, self._since, self._calls, self._rate_of = 0, None, [], None

    def batch_end(self, now: float, step: int) -> None:
        """`step` steps of the current epoch are done at `now` (Keras reports once per call into
        TensorFlow, which may run several steps)."""
        self._now, self._step = now, step
        if self._first_call is None and step:
            self._first_call = (step, now - self._epoch_started)
        if self._since is not None and step > self._since[1] and now > self._since[0]:
            self._calls.append((step - self._since[1], now - self._since[0]))
        self._since = (now, step)

    @property
    def _rate(self) -> float | None:
        """This epoch's samples per second over its calls after the first, the slowest one counted at
        the median call's pace per step; None before there are any. Reckoned when asked (a few times a
        second), not on every call, and once per call count."""
        if not self._calls:
            return None
        if self._rate_of is None or self._rate_of[0] != len(self._calls):
            self._rate_of = (len(self._calls), self._typical_rate())
        return self._rate_of[1]

    def _typical_rate(self) -> float:
        """The `_rate` of the calls so far."""
        per_step = sorted(seconds / steps for steps, seconds in self._calls)
        slowest = max(self._calls, key=lambda call: call[1] / call[0])
        steps = sum(steps for steps, _ in self._calls)
        seconds = sum(seconds for _, seconds in self._calls)
        median = per_step[len(per_step) // 2]
        seconds += slowest[0] * median - slowest[1]
        return steps * self._samples_per_step / seconds

    def train_end(self) -> None:
        """The current epoch's training steps are done (its validation follows)."""
        if self._rate is not None:
            self._last_rate = self._rate

    def validation_end(self, seconds: float) -> None:
        self._validations.append(seconds)

    @property
    def _samples_per_step(self) -> float:
        return self.samples / self.steps

    def samples_per_second(self) -> float | None:
        """Training images per second: this epoch's pace, else the last epoch's, else what the first call
        took (tracing included); None before any step."""
        if self._rate is not None:
            return self._rate
        if self._last_rate is not None:
            return self._last_rate
        if self._step and self._now > self._epoch_started:
            return self._step * self._samples_per_step / (self._now - self._epoch_started)
        return None

    def validation_seconds(self, rate: float) -> float:
        """What one validation will take, tracing aside: the last untraced one's time, else the estimate
        from `rate` (capped by the traced first validation once it has run)."""
        if len(self._validations) > 1:
            return self._validations[-1]
        estimate = self.validation_samples / (FORWARD_SPEEDUP * rate)
        return min(self._validations[0], estimate) if self._validations else estimate

    def _tracing_seconds(self, rate: float) -> float:
        """What tracing cost the run's first call: its time beyond its steps at `rate`."""
        if self._first_call is None:
            return 0.0
        steps, seconds = self._first_call
        return max(0.0, seconds - steps * self._samples_per_step / rate)

    def eta(self) -> float | None:
        """Seconds until the last epoch's validation ends; None until a pace is known (the first epoch's
        first call carries the tracing)."""
        rate = self._rate if self._rate is not None else self._last_rate
        if rate is None:
            return None
        epochs_after = self.epochs - self.epoch
        in_epoch = max(0.0, self.samples - self._step * self._samples_per_step)
        samples_left = in_epoch + epochs_after * self.samples
        validations = (epochs_after + 1) * self.validation_seconds(rate)
        if not self._validations and self.validation_samples:  # the first one traces the validation step
            validations += self._trace_share * self._tracing_seconds(rate)
        return samples_left / rate + validations
