"""Drives headless Chromium through JupyterLab for scripts/notebooks-in-browser.sh (which starts
the server, with the app exposed to the page as `window.jupyterapp`, and stops it).

    python notebooks-in-browser.py BASE_URL OUT_DIR TIMEOUT NOTEBOOK...

The token is in $JUPYTER_TOKEN. Per notebook, in a fresh browser: open it, wait for its kernel
to be idle, click Run > Run All Cells, wait until no cell is running and the kernel is idle, then
check from the notebook's model what the page shows: every code cell ran and has output (a cell
of evcxr commands only, `:dep`, prints nothing), and none shows an error (an error output, or
text on stderr other than progress lines: evcxr reports a panic or an error returned with `?` as
text on stderr, which JupyterLab shows on red; see notebook_errors.py). Saves a screenshot of the
whole notebook as OUT_DIR/NAME.png, then shuts the kernel down through the server's API (one
evcxr at a time uses the build folder). Exits 1 when a notebook failed, printing the failing
cells.
"""

import json
import os
import signal
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from notebook_errors import ANSI, stderr_errors

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH = 1400
# Chromium draws at most 16,384 pixels a side.
MAX_HEIGHT = 16000

# The current notebook as the page knows it: its kernel's status, and per code cell whether it
# is queued or running, its execution count, its source and its outputs (nbformat JSON).
STATE_JS = """
const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!nb || !nb.content || !nb.sessionContext) return null;
const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
return {
  path: nb.context.path,
  kernel: kernel ? kernel.status : "none",
  kernelName: nb.sessionContext.kernelDisplayName,
  cells: nb.content.widgets.filter((c) => c.model.type === "code").map((c) => ({
    running: c.model.executionState === "running",
    count: c.model.executionCount,
    source: c.model.sharedModel.getSource(),
    outputs: c.model.outputs.toJSON(),
  })),
};
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def api(base, path, method="GET"):
    req = urllib.request.Request(
        f"{base}{path}", method=method,
        headers={"Authorization": f"token {os.environ['JUPYTER_TOKEN']}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else None


def shut_down_kernels(base):
    """Ends every session (and so its kernel), then waits until the server has no kernel."""
    for s in api(base, "/api/sessions"):
        api(base, f"/api/sessions/{s['id']}", method="DELETE")
    deadline = time.time() + 60
    while api(base, "/api/kernels") and time.time() < deadline:
        time.sleep(0.5)


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # Chromium's own sandbox needs user namespaces, which containers and root often lack.
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--no-first-run", "--mute-audio",
                f"--window-size={WIDTH},1000"]:
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait_for(driver, what, timeout, test):
    """Polls the notebook's state until `test(state)` holds; the state it ends on."""
    deadline = time.time() + timeout
    while True:
        state = driver.execute_script(STATE_JS)
        if state is not None and test(state):
            return state
        if time.time() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s (last state: "
                               f"{summary(state) if state else 'no notebook open'})")
        time.sleep(1)


def summary(state):
    cells = state["cells"]
    return (f"kernel {state['kernel']}, {sum(c['running'] for c in cells)} of {len(cells)} code "
            f"cells queued or running, {sum(c['count'] is not None for c in cells)} ran")


def only_commands(source):
    """A cell of evcxr commands only (`:dep …`), which print nothing when they work."""
    lines = [l.strip() for l in source.splitlines() if l.strip() and not l.strip().startswith("//")]
    return bool(lines) and all(l.startswith(":") for l in lines)


def problems(state):
    """(cell number among the code cells, source, what is wrong) for every failing cell."""
    out = []
    for i, c in enumerate(state["cells"]):
        errors = [f"{o.get('ename', '')}: {o.get('evalue', '')}\n" + "\n".join(o.get("traceback", []))
                  for o in c["outputs"] if o["output_type"] == "error"]
        on_stderr = stderr_errors(c["outputs"])
        if on_stderr:
            errors.append("on stderr: " + "\n".join(on_stderr))
        if c["count"] is None:
            errors.append("it did not run (no execution count)")
        elif not c["outputs"] and not only_commands(c["source"]):
            errors.append("no output")
        if errors:
            out.append((i, c["source"], ANSI.sub("", "\n".join(errors))))
    return out


def screenshot(driver, path):
    """The whole notebook: the window made taller by what its scrolling panel hides."""
    hidden = driver.execute_script("""
        const nb = window.jupyterapp.shell.currentWidget.content.node;
        const scroller = nb.querySelector('.jp-WindowedPanel-outer') || nb;
        scroller.scrollTop = 0;
        return scroller.scrollHeight - scroller.clientHeight;""")
    height = driver.get_window_size()["height"] + int(hidden) + 20
    driver.set_window_size(WIDTH, min(height, MAX_HEIGHT))
    time.sleep(2)  # layout and charts at the new size
    driver.save_screenshot(path)


def run_notebook(base, out_dir, timeout, name):
    token = os.environ["JUPYTER_TOKEN"]
    shot = os.path.join(out_dir, name.rsplit(".", 1)[0] + ".png")
    driver = browser()
    start = time.time()
    try:
        # `reset`: a fresh workspace, this notebook alone (no tabs, no kernels of other ones).
        driver.get(f"{base}/lab/tree/{name}?reset&token={token}")
        wait_for(driver, f"{name}: the notebook and its kernel", 120,
                 lambda s: s["path"] == name and s["kernel"] == "idle" and s["cells"])
        # Through the menu bar, as a person would: Run > Run All Cells.
        wait = WebDriverWait(driver, 30)
        wait.until(EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][normalize-space()='Run']"))).click()
        wait.until(EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-Menu-item')]"
                       "[div[contains(@class,'lm-Menu-itemLabel')][normalize-space()='Run All Cells']]"))).click()
        # Started: some cell queued or run. Done: nothing queued or running and the kernel idle,
        # twice in a row (the kernel is briefly idle between two cells).
        wait_for(driver, f"{name}: Run All Cells to start", 60,
                 lambda s: any(c["running"] or c["count"] is not None for c in s["cells"]))
        idle = [0]

        def done(s):
            quiet = s["kernel"] == "idle" and not any(c["running"] for c in s["cells"])
            idle[0] = idle[0] + 1 if quiet else 0
            return idle[0] >= 2
        state = wait_for(driver, f"{name}: its cells to finish", timeout, done)
        took = time.time() - start
        charts = driver.execute_script(
            "return window.jupyterapp.shell.currentWidget.content.node"
            ".querySelectorAll('.jp-OutputArea-output svg, .jp-OutputArea-output img').length;")
        screenshot(driver, shot)
    except (TimeoutError, WebDriverException):
        # What the page showed when it failed.
        try:
            driver.save_screenshot(shot)
        except WebDriverException:
            pass
        raise
    finally:
        driver.quit()
    failed = problems(state)
    for i, source, error in failed:
        log(f"\n---- {name}: code cell {i} ----\n{source}\n---- what is wrong ----\n{error}\n----")
    log(f"== {name}: {'FAILED' if failed else 'ok'} in {took:.0f} s (kernel {state['kernelName']}): "
        f"{len(state['cells'])} code cells, {len(failed)} failing, {charts} charts or images "
        f"shown; screenshot {shot}")
    return not failed


def main():
    base, out_dir, timeout, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    # Killed by the shell script's trap: still close the browser.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(out_dir, exist_ok=True)
    failed = []
    for name in names:
        log(f"== {name}: opening it in JupyterLab")
        try:
            ok = run_notebook(base, out_dir, timeout, name)
        except (TimeoutError, WebDriverException) as e:
            log(f"== {name}: FAILED: {type(e).__name__}: {e}")
            ok = False
        finally:
            shut_down_kernels(base)
        if not ok:
            failed.append(name)
    log(f"notebooks in the browser: {len(names) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
