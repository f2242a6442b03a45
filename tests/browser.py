"""Headless Chromium for the run report: did every plot load, and a screenshot.

Debian's `chromium` package (.ci/run installs it when missing). A missing browser
is an error, never a skip: the report is only known to render where one ran.
"""

import html
import json
import os
import re
import shutil
import subprocess
from typing import Dict, List

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
# Appended to a copy of the page: after the load event, every plot image's
# decoded size goes into the DOM, which --dump-dom prints.
_CHECK = '''<script>
window.addEventListener('load', function () {
  var out = Array.prototype.map.call(document.querySelectorAll('img.plot'), function (i) {
    return {plot: i.dataset.plot, complete: i.complete, width: i.naturalWidth,
            height: i.naturalHeight};
  });
  var pre = document.createElement('pre');
  pre.id = 'plot-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>'''
_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
          '--allow-file-access-from-files', '--virtual-time-budget=10000']


def chromium() -> str:
  """The browser's path.

  Raises:
    FileNotFoundError: none is installed (apt-get install -y chromium).
  """
  for name in BROWSERS:
    path = shutil.which(name)
    if path:
      return path
  raise FileNotFoundError(f'no headless browser ({", ".join(BROWSERS)}); install '
                          "Debian's: apt-get install -y chromium")


def _run(args: List[str], timeout: int = 120) -> str:
  out = subprocess.run([chromium(), *_FLAGS, *args], capture_output=True, text=True,
                       timeout=timeout, check=True)
  return out.stdout


def loaded_plots(index_html: str) -> List[Dict]:
  """Every `img.plot` of the page as Chromium loaded it: plot name, complete,
  natural width and height (0 for an image that failed to load)."""
  with open(index_html) as f:
    page = f.read()
  check = os.path.join(os.path.dirname(index_html), '_plot_check.html')
  with open(check, 'w') as f:
    f.write(page.replace('</body>', _CHECK + '</body>'))
  try:
    dom = _run(['--dump-dom', 'file://' + os.path.abspath(check)])
  finally:
    os.remove(check)
  found = re.search(r'<pre id="plot-check">(.*?)</pre>', dom, re.S)
  if not found:
    raise AssertionError(f'the page did not finish loading: {dom[-500:]}')
  return json.loads(html.unescape(found.group(1)))


def screenshot(index_html: str, png: str, width: int = 1200, height: int = 2400) -> str:
  """A PNG of the page's first `height` pixels at `width`."""
  _run([f'--screenshot={os.path.abspath(png)}', f'--window-size={width},{height}',
        'file://' + os.path.abspath(index_html)])
  return png
