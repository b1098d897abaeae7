"""report.html in headless Chromium: what the rendered page holds (tables, images loaded or
broken, errors, a column sorted by a click) and its screenshot.

    python tests/browser.py OUT/report.html docs/report_example.png   # the README's picture
    python -c "import sys; sys.path.insert(0, 'tests'); import browser; \
print(browser.probe('OUT/report.html'))"

A probe script goes into a copy of the page beside it (so its images resolve), before the page's
own script: it records every error (a broken image fires one, so does a failed script and
console.error), then on load lists the images and tables, clicks the third header of every table
twice and keeps the column's sort keys after each click, and writes all that as JSON into the
page, which Chromium's --dump-dom prints.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__errors.push(t && t.tagName ? t.tagName + " " + (t.src || t.href) : String(e.message));
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var keys = function (table, col) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.cells[col].getAttribute("data-sort");
    });
  };
  var tables = Array.prototype.map.call(document.querySelectorAll("table"), function (t) {
    var out = {id: t.id, rows: t.tBodies[0].rows.length, headers: t.tHead.rows[0].cells.length};
    var th = t.tHead.rows[0].cells[2];
    if (th) {
      th.click(); out.first_click = keys(t, 2);
      th.click(); out.second_click = keys(t, 2);
    }
    return out;
  });
  var images = Array.prototype.map.call(document.images, function (i) {
    return {src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0};
  });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({tables: tables, images: images, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>
"""


def chromium():
    """The Chromium binary (Debian's chromium), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args, timeout=120):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def probe(page):
    """The rendered page's facts: {"tables", "images", "errors", "console"} (console: the
    error lines Chromium logged)."""
    page = Path(page).resolve()
    copy = page.with_name(page.stem + ".probe.html")
    text = page.read_text()
    copy.write_text(text.replace("<head>", "<head>\n" + PROBE, 1))
    try:
        done = _run(["--virtual-time-budget=10000", "--dump-dom", copy.as_uri()])
    finally:
        copy.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    if found is None:
        raise AssertionError(f"the probe did not run: {done.stderr[-2000:]}")
    facts = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<")
                       .replace("&gt;", ">").replace("&quot;", '"'))
    facts["console"] = [line for line in done.stderr.splitlines()
                        if "CONSOLE" in line and ("Uncaught" in line or "rror" in line)]
    return facts


def screenshot(page, png, width=1280, height=1600):
    """A PNG of the page's top width x height pixels."""
    done = _run([f"--screenshot={Path(png).resolve()}", f"--window-size={width},{height}",
                 "--hide-scrollbars", Path(page).resolve().as_uri()])
    if not Path(png).is_file():
        raise AssertionError(f"no screenshot: {done.stderr[-2000:]}")
    return Path(png)


def small_png(png, width=960):
    """Shrink a screenshot to `width` pixels and 256 colours (a picture small enough to commit)."""
    with Image.open(png) as image:
        image.load()
    small = image.convert("RGB").resize((width, round(image.height * width / image.width)),
                                        Image.LANCZOS)
    small.quantize(256).save(png, optimize=True)
    return Path(png)


if __name__ == "__main__":
    print(small_png(screenshot(sys.argv[1], sys.argv[2], 1280, 1400)))
