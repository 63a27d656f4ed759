"""The course's website, built offline by `inscl-repro docs` and loaded in a real headless Chromium (Debian's `chromium`
package; `.ci/run` installs it): the index loads, every page renders without an error or traceback, equations are
typeset by the MathJax shipped with the site, and the figures are present and served."""
import functools, http.server, re, shutil, subprocess, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest
from conftest import ROOT

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason='no headless Chromium (apt-get install chromium)')

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site built by the command a user runs, served over HTTP on a free local port."
    out = tmp_path_factory.mktemp('docs')/'_site'
    p = subprocess.run(['inscl-repro', 'docs', '--out', str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield out, f'http://127.0.0.1:{srv.server_port}'
    srv.shutdown()

def dom(url:str) -> str:
    "The page's DOM after Chromium has run its scripts (MathJax typesets asynchronously: virtual time lets it finish)."
    p = subprocess.run([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions',
                        '--virtual-time-budget=8000', '--dump-dom', url], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and '<html' in p.stdout, f'{url}: chromium failed ({p.returncode}): {p.stderr[-2000:]}'
    return p.stdout

def test_index_loads(site):
    out, base = site
    html = dom(base + '/')                     # the root forwards to the course's index
    assert 'The map' in html and 'Opening the notebooks' in html
    for part in ('The shared core', 'The continual study', 'The distillation study', 'Runs and reports'):
        assert part in html, part
    assert (out/'search.html').exists() and 'search' in html.lower()

def test_every_page_renders(site):
    out, base = site
    pages = sorted(p.relative_to(out).as_posix() for d in ('nbs', 'reports', 'api') for p in (out/d).rglob('*.html'))
    from inscl.docs import course_notebooks
    want = {p.removesuffix('.ipynb') + '.html' for p in course_notebooks()}
    assert want <= set(pages), f'pages missing from the site: {sorted(want - set(pages))}'
    with ThreadPoolExecutor(2) as ex: doms = dict(zip(pages, ex.map(lambda p: dom(f'{base}/{p}'), pages)))
    typeset = 0
    for page, html in doms.items():
        assert 'Traceback (most recent call last)' not in html, f'{page}: traceback text'
        assert 'class="problematic"' not in html and 'class="system-message"' not in html, f'{page}: a reST error'
        assert 'mjx-merror' not in re.sub(r'<style.*?</style>', '', html, flags=re.S), f'{page}: an equation MathJax could not typeset'
        assert re.search(r'<h1\b', html), f'{page}: no title'
        if 'class="math' in html:              # Sphinx marked math here: the shipped MathJax must have typeset all of it
            assert '<mjx-container' in html, f'{page}: equations left untypeset (is MathJax shipped in _static/mathjax?)'
            assert not re.search(r'\\\(|\\\[', re.sub(r'<(script|style).*?</\1>', '', html, flags=re.S)), f'{page}: raw TeX delimiters left'
            typeset += 1
    assert typeset >= 5, f'only {typeset} pages with typeset equations'
    assert (out/'_static/mathjax/tex-chtml.js').exists()
    remote = re.search(r'<script[^>]+src="https?://(?!127\.0\.0\.1[:/])[^"]*', ''.join(doms.values()))   # MathJax loads its parts from the site
    assert not remote, f'a page loads a script from the network: {remote[0]}'

def test_figures_are_present(site):
    "The report pages show the committed figures, and the server returns each image."
    import urllib.parse, urllib.request
    out, base = site
    for page in ('reports/20_continual.html', 'reports/21_distill.html'):
        html = dom(f'{base}/{page}')
        imgs = re.findall(r'<img[^>]+src="([^"]+)"', html)
        assert imgs, f'{page}: no figure'
        for src in imgs:
            with urllib.request.urlopen(urllib.parse.urljoin(f'{base}/{page}', src)) as r:
                assert r.status == 200 and r.headers['Content-Type'].startswith('image/'), (page, src)
                assert len(r.read()) > 1000, (page, src)
