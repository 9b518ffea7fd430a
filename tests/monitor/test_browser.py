"""The dashboard and the HTML report in headless Chromium: the page loads without console
errors, its SVG plots are drawn, and it updates by itself while a job runs.

Screenshots go to test-output/ (dashboard-running.png, dashboard.png, report.png)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.helpers import SKYFILL, Server, job_dir
from tests.monitor.browser import Chromium
from tests.monitor.conftest import start_job

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
SNAPSHOT = """[
  document.getElementById('job').dataset.done,
  document.getElementById('kpis').textContent,
  document.querySelector('#chart-done polyline.line')?.getAttribute('points') ?? ''
]"""
DRAWN = """Array.from(document.querySelectorAll('svg.chart')).map((svg) => ({
  id: svg.id,
  lines: Array.from(svg.querySelectorAll('polyline.line'))
    .map((p) => p.getAttribute('points').trim().split(/\\s+/).length),
  bars: svg.querySelectorAll('rect.bar').length,
}))"""


def _start_dashboard(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [*SKYFILL, "dashboard", "--workdir", str(workdir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if match is None:
        process.kill()
        raise AssertionError(f"no dashboard URL in {line!r}: {process.stderr.read()}")  # type: ignore[union-attr]
    return process, match.group(1)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_dashboard_and_report_in_chromium(simnet: Server, tmp_path: Path) -> None:
    job = start_job(simnet, tmp_path, "dash", "--rate-limit", "8/1s", "--sample-interval", "0.5")
    dashboard, url = _start_dashboard(tmp_path)
    browser = Chromium(tmp_path / "profile")
    try:
        deadline = time.monotonic() + 30
        while not (job_dir(tmp_path, "dash") / "state.sqlite").exists():
            assert time.monotonic() < deadline and job.poll() is None
            time.sleep(0.1)
        await browser.open_page()
        await browser.navigate(f"{url}#job=dash")
        await browser.wait_for("document.querySelector('#chart-done polyline.line') !== null")
        assert job.poll() is None, "the job ended before the dashboard showed it running"
        first = await browser.evaluate(SNAPSHOT)
        await browser.screenshot(OUTPUT / "dashboard-running.png")
        # The page updates itself (polling, no reload) while the job runs.
        second = first
        deadline = time.monotonic() + 20
        while second == first and time.monotonic() < deadline:
            time.sleep(0.5)
            second = await browser.evaluate(SNAPSHOT)
        assert second != first
        assert await browser.evaluate("performance.getEntriesByType('navigation').length") == 1

        _, stderr = job.communicate(timeout=90)
        assert job.returncode == 0, stderr
        total = await browser.evaluate("document.getElementById('done').textContent")
        dids = len(Path(simnet.ready["dids"]).read_text().split())
        await browser.wait_for(
            f"document.getElementById('job').dataset.done === '{dids}' && "
            "document.getElementById('job-title').textContent.includes('completed')"
        )
        total = await browser.evaluate("document.getElementById('done').textContent")
        assert total.startswith(f"{dids} / {dids} DIDs")
        charts = await browser.evaluate(DRAWN)
        assert {c["id"] for c in charts} == {
            "chart-dids",
            "chart-records",
            "chart-done",
            "chart-outcomes",
        }
        for chart in charts:
            assert chart["bars"] > 0 or (chart["lines"] and chart["lines"][0] >= 3), chart
        hosts = await browser.evaluate("document.querySelectorAll('#hosts tbody tr').length")
        assert hosts >= 4  # three PDS hosts and the PLC directory
        jobs = await browser.evaluate("document.querySelector('#jobs a').textContent")
        assert jobs.startswith("dash")
        await browser.screenshot(OUTPUT / "dashboard.png")
        assert browser.console_errors() == []

        # The evaluation report, as the dashboard links to it.
        report = await browser.evaluate("document.getElementById('report-link').href")
        await browser.navigate(report)
        drawn = await browser.evaluate(
            "Array.from(document.querySelectorAll('svg.chart'))"
            ".filter((s) => s.querySelector('polyline, rect.bar')).length"
        )
        assert drawn >= 9
        width = await browser.evaluate("document.querySelector('svg.chart').getBBox().width")
        assert width > 100  # laid out, not an empty box
        assert "dash" in await browser.evaluate("document.title")
        await browser.screenshot(OUTPUT / "report.png")
        assert browser.console_errors() == []
    finally:
        await browser.close()
        browser.stop()
        _stop(dashboard)
        _stop(job)
