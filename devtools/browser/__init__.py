"""Check the pack in ComfyUI's real frontend: headless Chromium driven by Playwright (a dev tool, not in the pack).

* ``launch``: find Chromium and Playwright (or say in one line what is missing) and open a page.
* ``canvas``: a ComfyUI page: load a template as the template browser does, read dialogs, node boxes and the
  pack's report panels, press Run and wait, take screenshots.
* ``check``: the checks themselves (every shipped workflow loads without missing nodes or overlaps; the toy
  template runs and shows its parse and trace), shared by ``tests/comfyui/test_browser.py`` and
  ``scripts/browser_check.py``.

Playwright comes from PyPI (``pip install playwright``); its own browser download is not used: Chromium is the
system's (``/usr/bin/chromium`` from Debian's ``chromium`` package, or ``L2S_CHROMIUM``).
"""
