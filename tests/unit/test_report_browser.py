"""report.html as a reader sees it: rendered by a real headless Chromium (Debian's `chromium`, which
.ci/run installs) at a laptop's and a narrow window's width, from a small synthetic results folder
(tests/analysis_synth.py) that has every section: the fits, the sensitivity table, the fidelity
against N, τ_gen, replicate seeds, the recorded onset definitions, the trials, the figures, the
config. Nothing may run past the page's edge or be cut off inside an element, every figure must
load, and a trial the stopper ended at its onset must say its memorization rate was not measurable.

The page itself has no script; the test renders a copy with a check appended that runs after the
page has loaded (the folded plain-text report opened) and writes what it measured into the DOM,
which `chromium --dump-dom` prints."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess

import pytest

from analysis_synth import write_sweep
from raydiff.analysis.report import analyze

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless Chromium here (Debian: apt-get install chromium; .ci/run installs it): report.html is not rendered",
)

CHECK = """<script>
window.addEventListener("load", () => {
  for (const d of document.querySelectorAll("details")) d.open = true;  // the plain-text copy too
  const vw = document.documentElement.clientWidth;
  const name = (el) => el.tagName.toLowerCase() + ": " + (el.textContent || el.alt || "").trim().slice(0, 50);
  const out = {vw, scrollWidth: document.documentElement.scrollWidth, wide: [], clipped: [], images: [], rates: []};
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.right > vw + 0.5 || r.left < -0.5) out.wide.push(name(el) + " (right edge " + Math.round(r.right) + ")");
    // content wider than its box: past the page's edge or over its neighbours when visible, cut off
    // (or behind a scroll bar) otherwise
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
      const how = getComputedStyle(el).overflowX === "visible" ? out.wide : out.clipped;
      how.push(name(el) + " (" + el.scrollWidth + " in " + el.clientWidth + ")");
    }
  }
  for (const img of document.images) out.images.push({alt: img.alt, complete: img.complete, width: img.naturalWidth});
  const pre = document.createElement("pre");
  pre.id = "raydiff-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def render(page: str, tmp_path, width: int) -> dict:
    """What the check measured on `page` in Chromium with a window `width` pixels wide."""
    checked = tmp_path / f"checked_{width}.html"
    checked.write_text(page.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    m = re.search(r'<pre id="raydiff-check">(.*?)</pre>', run.stdout, re.S)
    assert m, f"Chromium printed no check (exit {run.returncode}): {run.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("browser") / "synthetic_with_a_long_name_for_the_sweep"
    write_sweep(root, n=(32, 64, 128), b=(16,), lr=(1e-3,), log_c=4.0, seeds=2, definitions=True,
                tau_gen=40.0, fid_extractor="digits_classifier/v3", fid_n_exponent=-0.5, running=1, seed=5)  # fmt: skip
    out = root.parent / "analysis"
    analyze(str(root), str(out), n_boot=50, out=io.StringIO())
    return (out / "report.html").read_text(encoding="utf-8")


def test_every_section_is_a_table_or_a_figure(report):
    body = report.split("<h2>Figures</h2>")[0]
    assert "<pre" not in body  # no fixed-width text among the fits and the trials
    for title in ("Sensitivity to the onset definition", "peak against N", "beside τ<sub>mem</sub>",
                  "Replicate seeds", "Onset definitions recorded by the sweep"):  # fmt: skip
        section = body.split(title, 1)[1].split("<h3>", 1)[0]
        assert "<table>" in section, title


def test_a_rate_that_was_not_measured_says_so(report):
    """The synthetic trials stop at their onset, as the stopper ends them: no rate, and why."""
    trials = report.split("<h2>Trials</h2>", 1)[1].split("<h2>", 1)[0]
    assert trials.count("not measurable: stopped at onset") >= 4
    assert not re.search(r"<td>-\d", trials)  # no negative rate (nor any negative number) in the table


@pytest.mark.parametrize("width", [1280, 800])
def test_nothing_overflows_and_every_figure_loads(report, tmp_path, width):
    seen = render(report, tmp_path, width)
    assert seen["vw"] > 0.9 * width
    assert seen["scrollWidth"] <= seen["vw"], seen["wide"][:10]
    assert seen["wide"] == [] and seen["clipped"] == []
    assert len(seen["images"]) >= 4 and len(seen["images"]) == report.count("<img ")
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]


def test_the_check_sees_overflow_and_a_broken_figure(report, tmp_path):
    """The same check on a page with a line too long to wrap, a cut-off box and a figure that does
    not decode: it reports each (so the test above can fail)."""
    bad = report.replace(
        "<h2>Trials</h2>",
        "<pre style='white-space:pre'>" + "x" * 400 + "</pre><div style='overflow:hidden;width:50px;white-space:nowrap'>"
        + "y" * 80 + "</div><img alt=broken src='data:image/png;base64,AAAA'><h2>Trials</h2>",
    )
    seen = render(bad, tmp_path, 800)
    assert seen["scrollWidth"] > seen["vw"] and any(w.startswith("pre:") for w in seen["wide"])
    assert any(c.startswith("div:") for c in seen["clipped"])
    assert [i for i in seen["images"] if i["alt"] == "broken"] == [{"alt": "broken", "complete": True, "width": 0}]
