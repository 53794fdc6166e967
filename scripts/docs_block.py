"""Benchmark output into docs/performance.md: figures are written by the scripts, not copied.

``with recorded("bench_cpu", write=args.docs): ...`` prints as usual and, with
``write``, puts everything printed inside the block into the document between
``<!-- bench_cpu:begin -->`` and ``<!-- bench_cpu:end -->`` as a code block
(the run's own header lines say the machine, date and load).
"""

import contextlib
import io
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


class _Tee(io.TextIOBase):
    def __init__(self, out):
        self.out, self.text = out, io.StringIO()

    def write(self, s):
        self.text.write(s)
        return self.out.write(s)

    def flush(self):
        self.out.flush()


def replace_block(text, name, body):
    """``text`` with the block ``name`` replaced by ``body`` (a fenced code block)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no {begin} ... {end} block")
    block = f"{begin}\n```\n{body.rstrip()}\n```\n{end}"
    return pattern.sub(lambda _: block, text)


@contextlib.contextmanager
def recorded(name, write=False, doc=DOC):
    tee = _Tee(sys.stdout)
    saved, sys.stdout = sys.stdout, tee
    try:
        yield
    finally:
        sys.stdout = saved
    if write:
        doc.write_text(replace_block(doc.read_text(), name, tee.text.getvalue()))
        print(f"# written into {doc} ({name})")
