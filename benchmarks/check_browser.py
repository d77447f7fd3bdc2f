"""Open a run's ``index.html`` in headless Chromium and check it the way a reader would see it.

    python benchmarks/check_browser.py RUN_FOLDER [--screenshots DIR]

Checks that the page loads from disk with no network, that every module of every K is rendered
(a visible element ``K{K}-M{k}``), that every image loaded, and that the browser reported no
console message of level error/warning, no page error and no failed request. Writes a screenshot
of the top of the page and, with ``--screenshots``, one per K section. Needs Chromium (Debian:
``apt-get install chromium``); with Playwright installed (``pip install playwright``; no browser
download needed, it drives the installed Chromium) every check runs, otherwise the Chromium
command line renders the page (``--dump-dom``) and the images are checked on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium():
    """Path of a Chromium binary ($ULCMOD_CHROMIUM first), or None."""
    env = os.environ.get("ULCMOD_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def expected_modules(folder: Path) -> list:
    ks = json.loads((folder / "manifest.json").read_text())["settings"]["ks"]
    return [f"K{K}-M{k}" for K in sorted(int(k) for k in ks) for k in range(K)]


def _with_playwright(chromium, page_url, ids, screenshot, sections_dir):
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
            page = context.new_page()
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(f"console {m.type}: "
                                                                                               f"{m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(page_url, wait_until="load")
            rendered = page.evaluate("""ids => ids.filter(id => {
                const e = document.getElementById(id); if (!e) return false;
                const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; })""", ids)
            broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                                   ".map(i => i.getAttribute('src'))")
            n_images = page.evaluate("document.images.length")
            problems += [f"image not loaded: {src}" for src in broken]
            page.screenshot(path=str(screenshot))
            if sections_dir:
                sections_dir.mkdir(parents=True, exist_ok=True)
                for sid in page.evaluate("Array.from(document.querySelectorAll('h2[id]')).map(h => h.id)"):
                    box = page.evaluate("""id => { const h = document.getElementById(id);
                        const r = h.getBoundingClientRect(); return [r.top + window.scrollY, r.left]; }""", sid)
                    page.screenshot(path=str(sections_dir / f"section_{sid}.png"), full_page=True,
                                    clip={"x": 0, "y": box[0], "width": 1400, "height": 1600})
                for mid in [i for i in ids if i.endswith("-M0")]:  # one module card per K
                    page.locator(f"#{mid}").screenshot(path=str(sections_dir / f"module_{mid}.png"))
        finally:
            browser.close()
    return rendered, n_images, problems


def _with_command_line(chromium, page_url, ids, screenshot, folder):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page_url], capture_output=True, text=True, timeout=120)
    subprocess.run([chromium, *flags, f"--screenshot={screenshot}", "--window-size=1400,1000", page_url],
                   capture_output=True, text=True, timeout=120)
    problems = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    rendered = [i for i in ids if f'id="{i}"' in dom.stdout]
    images = re.findall(r'<img[^>]* src="([^"]+)"', dom.stdout)
    problems += [f"image missing: {src}" for src in images if not (folder / src).is_file()]
    return rendered, len(images), problems


def check(folder, screenshot, sections_dir=None) -> dict:
    """Open ``folder/index.html`` in headless Chromium; returns what was rendered and the
    problems found (an empty list when the page is fine)."""
    folder = Path(folder).resolve()
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium found: apt-get install chromium (or set ULCMOD_CHROMIUM)")
    ids = expected_modules(folder)
    url = (folder / "index.html").as_uri()
    try:
        import playwright  # noqa: F401

        how = "playwright"
        rendered, n_images, problems = _with_playwright(chromium, url, ids, Path(screenshot),
                                                        sections_dir and Path(sections_dir))
    except ImportError:
        how = "command line"
        rendered, n_images, problems = _with_command_line(chromium, url, ids, Path(screenshot), folder)
    problems += [f"module not rendered: {i}" for i in ids if i not in rendered]
    return {"chromium": chromium, "driver": how, "modules_expected": len(ids), "modules_rendered": len(rendered),
            "images": n_images, "problems": problems, "screenshot": str(screenshot)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder with index.html (ulcmod discover --quick --out DIR)")
    p.add_argument("--screenshots", help="folder for a screenshot of each section of the page")
    args = p.parse_args(argv)
    shots = Path(args.screenshots) if args.screenshots else None
    report = check(args.run, (shots or Path(args.run)) / "index_top.png", shots)
    for key, value in report.items():
        print(f"{key}: {value}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
