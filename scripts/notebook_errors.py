"""What counts as an error in an executed notebook's cell: shared by scripts/run-notebooks.sh
(headless) and scripts/notebooks-in-browser.py (JupyterLab).

evcxr reports a panic, and an error returned with `?`, only as text on stderr (JupyterLab shows
it on red), so text on stderr counts as an error, except the progress lines of long work: where
stderr is not a terminal, src/progress.rs writes `epoch 2/2: 7/8, 1m04s elapsed, ~9s left, …`
once a minute (every IPIRM_LOG_EVERY seconds when set), which a slow or busy machine writes
where a fast one does not.
"""

import re

# Colours in evcxr's compile errors.
ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLOCK = r"(\d+h)?(\d+m)?\d+s"
# `{prefix}: {pos}/{len}, {elapsed} elapsed[, ~{left} left][, {message}]` (Progress::log_line);
# no prefix holds a colon.
PROGRESS = re.compile(rf"^[^:]+: \d+/\d+, {_CLOCK} elapsed(, ~{_CLOCK} left)?(, .*)?$")


def stderr_errors(outputs):
    """The lines a cell's outputs wrote on stderr, colours removed, less blank and progress lines."""
    lines = (ANSI.sub("", line)
             for o in outputs if o["output_type"] == "stream" and o.get("name") == "stderr"
             for line in "".join(o["text"]).splitlines())
    return [line for line in lines if line.strip() and not PROGRESS.match(line)]
