"""Progress of a sweep for a terminal, a batch log or a dashboard.

A ``Reporter`` hears of two things: finished work units (``units``, from the
sweep) and, inside the unit being computed in this process, steps of its
passes (``steps``, from the engines through ``step()``: a forward or backward
layer, or a chunk of them). It shows them as

* ``bar``:  two tqdm bars on stderr, the sweep's units and the current unit's
  steps, each with its rate and ETA (the default on a terminal);
* ``log``:  a plain line per finished unit and, while a unit runs, one every
  ``every`` seconds with its steps done, rate and ETA (the default when stderr
  is not a terminal, as in a Slurm job's log);
* ``json``: one JSON object per line for dashboards: ``{"event": "unit", ...}``
  per finished unit, ``{"event": "steps", ...}`` at most every ``every`` seconds;
* ``quiet``: nothing.

Engines call ``step(done, total)`` without knowing who listens: it costs one
attribute lookup when nobody does (Dask workers, the Python API by default). A
unit's second pass (the Jacobian spectrum) calls ``phase(name)`` first: its
steps then count anew under "<unit>, <name>".
"""

import contextlib
import json
import sys
import time

KINDS = ("auto", "bar", "log", "json", "quiet")

_current = None  # the Reporter of the unit being computed in this process


def step(done, total):
    """Tell the listening reporter (if any) that ``done`` of ``total`` steps of the
    current unit are finished."""
    if _current is not None:
        _current.steps(done, total)


def starting(label):
    """The unit about to be computed in this process (the label of its steps)."""
    if _current is not None:
        _current.unit(label)


def phase(name):
    """The current unit goes on with another pass (the Jacobian spectrum, say): its
    steps count anew from here, shown as "<unit>, <name>"."""
    if _current is not None and hasattr(_current, "phase"):
        _current.phase(name)


def notice(text):
    """A one-line notice (a first kernel compilation, say) to the listening reporter."""
    if _current is not None:
        _current.notice(text)


@contextlib.contextmanager
def listening(reporter):
    """``reporter`` hears ``step`` and ``notice`` inside the block."""
    global _current
    saved, _current = _current, reporter
    try:
        yield reporter
    finally:
        _current = saved


class Reporter:
    """Shows units and steps as ``kind`` (see the module docstring) on ``stream``."""

    def __init__(self, kind="auto", stream=None, every=30.0, clock=time.monotonic):
        stream = stream or sys.stderr
        if kind == "auto":
            kind = "bar" if getattr(stream, "isatty", lambda: False)() else "log"
        if kind not in KINDS:
            raise ValueError(f"progress kind {kind!r}; allowed: {', '.join(KINDS)}")
        self.kind, self.stream, self.every, self.clock = kind, stream, every, clock
        self._unit_bar = self._step_bar = None
        self._last = None  # clock time of the last throttled line
        self._unit_start = None
        self.label = self._unit_label = ""

    # -- the sweep's side

    def units(self, done, total):
        """``done`` of ``total`` work units are finished (the sweep's progress callback)."""
        if self.kind == "bar":
            if self._unit_bar is None:
                from tqdm import tqdm

                self._unit_bar = tqdm(
                    total=total, initial=done, desc="work units", file=self.stream, position=0
                )
            else:
                self._unit_bar.update(done - self._unit_bar.n)
        elif self.kind == "log" and done:
            self._line(f"{done}/{total} work units done")
        elif self.kind == "json":
            self._json({"event": "unit", "done": done, "total": total})
        self._unit_start = None
        if self._step_bar is not None:
            self._step_bar.close()
            self._step_bar = None

    def unit(self, label):
        """The unit about to be computed here (shown beside its steps)."""
        self.label = self._unit_label = label

    def phase(self, name):
        """Another pass of the current unit: its steps count anew, as "<unit>, <name>"."""
        self.label = f"{self._unit_label}, {name}" if self._unit_label else name
        self._unit_start = None
        if self._step_bar is not None:
            self._step_bar.close()
            self._step_bar = None

    def notice(self, text):
        if self.kind in ("bar", "log"):
            self._line(text)
        elif self.kind == "json":
            self._json({"event": "notice", "text": text})

    def close(self):
        for bar in (self._step_bar, self._unit_bar):
            if bar is not None:
                bar.close()
        self._step_bar = self._unit_bar = None

    # -- the engines' side

    def steps(self, done, total):
        now = self.clock()
        if self._unit_start is None:  # the unit's first step: lines start ``every`` s later
            self._unit_start = self._last = now
        if self.kind == "bar":
            if self._step_bar is None:
                from tqdm import tqdm

                desc = self.label or "steps"
                self._step_bar = tqdm(
                    total=total, desc=desc, file=self.stream, position=1, leave=False
                )
            self._step_bar.update(done - self._step_bar.n)
            return
        if self.kind not in ("log", "json"):
            return
        if now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self._unit_start
        rate = done / elapsed if elapsed > 0 else None
        eta = (total - done) / rate if rate else None
        if self.kind == "json":
            self._json(
                {"event": "steps", "unit": self.label, "done": done, "total": total,
                 "rate": rate, "eta_seconds": eta}
            )  # fmt: skip
        else:
            self._line(
                f"{self.label}: {done}/{total} steps"
                + (f", {rate:.1f}/s, ETA {eta:.0f} s" if rate else "")
            )

    # -- output

    def _line(self, text):
        if self.kind == "bar":
            from tqdm import tqdm

            tqdm.write(f"vxsim: {text}", file=self.stream)
        else:
            print(f"vxsim: {text}", file=self.stream, flush=True)

    def _json(self, record):
        print(json.dumps({"time": time.time(), **record}), file=self.stream, flush=True)
