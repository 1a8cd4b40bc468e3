"""The demo launcher: run a workflow (default: the toy world) in a real, headless ComfyUI and print the images.

This is the README's first command (``bash scripts/demo.sh`` runs ``scripts/run_toy_world.py``, which calls
:func:`devtools.launcher.cli.main`). It owns the whole way from a bare machine to images on disk; every step is
reused by the next run. One module per step:

1. **Find or install ComfyUI** (:mod:`.plan` chooses, :mod:`.install` acts). One route, chosen from the
   environment:

   * ``COMFYUI_PATH`` names an existing ComfyUI checkout (the folder holding ``main.py``): it is used as it is and the
     launcher writes nothing into it (see step 3).
   * else ``COMFYUI_GIT_URL`` names a ComfyUI git repository, a URL or a local path/mirror (for machines that reach
     no git host): it is cloned once into ``<workspace>/ComfyUI``.
   * else comfy-cli installs ComfyUI into ``<workspace>/ComfyUI``: ``pip install comfy-cli`` into the workspace venv,
     then ``comfy --skip-prompt --workspace <workspace>/ComfyUI install --cpu --skip-manager`` (``--restore`` when the
     folder is already there). This needs github.com and PyPI; comfy-cli picks the CPU build of torch and also
     records the workspace in its own user config.

   The workspace is ``COMFYUI_WORKSPACE``, default ``.comfyui/`` in this repo (git-ignored).

2. **Pick the Python that runs ComfyUI** (:mod:`.plan`, :mod:`.requirements`). ``COMFYUI_PYTHON`` (an interpreter
   that already has ComfyUI's requirements; nothing is installed into it); else, for ``COMFYUI_PATH``, the checkout's
   own ``.venv/`` or ``venv/``; else the workspace venv ``<workspace>/venv``, created with the interpreter running
   the launcher. Into that venv ComfyUI's ``requirements.txt`` is installed once (comfy-cli does it on its route; a
   stamp file records which ``requirements.txt`` was installed, so a changed checkout is reinstalled). torch and
   torchvision are left to pip (and the usual ``PIP_INDEX_URL`` / ``PIP_EXTRA_INDEX_URL``) and are installed only
   when the venv cannot import them, so a venv prepared with the right torch build is kept; torchaudio is optional
   for ComfyUI (audio models only) and a failure to install it is only a warning. ``requests`` is added: ComfyUI's
   frontend manager imports it without listing it (older transformers pulled it in).

3. **Wire the pack in without touching the checkout** (:mod:`.base_dir`). ComfyUI runs with ``--base-directory
   <workspace>/base``, so ``custom_nodes/``, ``input/``, ``output/``, ``user/`` and ``temp/`` live there:
   ``custom_nodes/learn_to_steer`` is a symlink to this repo (an entry of that name that points elsewhere stops the
   run: nothing of the user's is removed), the checkout's own custom node packs are not loaded, and its ``models/``
   folders stay visible through ``<workspace>/base/extra_model_paths.yaml`` (for ``--workflow`` graphs that need
   model files). The database goes to ``<workspace>/base/user/comfyui.db``.

4. **Run** (:mod:`.cli`, :mod:`.workflow`, the server driver :mod:`devtools.comfy_server`). ``main.py --cpu --listen
   127.0.0.1 --port <free port> --disable-auto-launch --disable-api-nodes`` with ComfyUI's output in
   ``<workspace>/comfyui.log``; wait until ``/object_info`` answers; ``POST /prompt`` the API-format workflow; poll
   ``/history/<id>``; print the absolute paths of the saved images and the wall time; stop the server, also on
   errors, Ctrl-C, SIGTERM and SIGHUP (on Linux the server also gets SIGTERM if this process is killed). With
   ``--seeds N`` (default 4 for the toy-world workflow, 1 for others) the workflow runs once per seed 0..N-1: every
   ``seed`` / ``noise_seed`` input of the graph is set to that seed. What went wrong is read from ComfyUI's log
   (:mod:`.server_log`).

5. **Report** (the toy-world workflow, :mod:`.toy_demo`): ``python -m training.toy.demo`` with ComfyUI's Python
   judges each seed's plain and steered image (the colour-geometry judge of the benchmark), prints what it read
   ("seed 0: plain: below - wrong; steered: above - right") and saves one grid image, every panel enlarged to
   256 px or more, in the output folder.

Other environment variables: ``COMFYUI_PYTHONPATH`` (``PYTHONPATH`` of the server, e.g. a torchvision stub; the
caller's ``PYTHONPATH`` is never passed on because this repo's ``nodes/`` would shadow ComfyUI's ``nodes.py``),
``L2S_COMFY_THREADS`` (torch/OpenMP threads of the server).

Only the standard library is used; ComfyUI (``comfy``) is never imported here.

**Why comfy-cli only installs** (checked against comfy-cli 1.23.0). comfy-cli does step 1 on its route and is used
there. ``comfy launch --background`` and ``comfy run --workflow`` would overlap steps 4 and 5, but cannot replace them:

* The ``COMFYUI_PATH`` route runs with a bare ``python3`` and no network; comfy-cli is a PyPI package with 23
  direct dependencies (typer, rich, GitPython, psutil, websocket-client, uv, ...; 55 packages in its venv), so the
  standard-library server driver has to exist for that route anyway, and the integration-test harness drives its
  servers with the same driver.
* ``comfy launch --background`` keeps one background server per user (its pid and port go into comfy-cli's user
  config; a second launch is refused with "You cannot start more than one background service"), so two runs, or a
  run beside another comfy-cli user, collide. It writes its log to ``<workspace>/user/comfyui_<port>.log`` inside
  the ComfyUI checkout, which breaks "the launcher writes nothing into ``COMFYUI_PATH``". It calls the server ready
  when the log prints "To see the GUI go to:", not when ``/object_info`` answers. The server is the grandchild of a
  ``comfy`` process that exits (``os._exit``) once it is up, so it cannot get a parent-death signal: a killed
  launcher leaves it running and holding the port. It is stopped with ``comfy stop``, which SIGKILLs the recorded
  process's children instead of sending SIGTERM. It has no option for the interpreter: the Python is
  ``VIRTUAL_ENV``, ``CONDA_PREFIX``, the checkout's ``.venv``/``venv`` or comfy-cli's own, so ``COMFYUI_PYTHON``
  could only be passed by faking ``VIRTUAL_ENV``. A launch also fetches comfy-cli's knowledge bundle from the
  network when its cache is stale.
* ``comfy run --workflow F --wait`` follows the prompt over a websocket and reports outputs as absolute paths only
  when they lie in ``<workspace>/output`` of the checkout; with ``--base-directory`` it prints ``/view?...`` URLs
  instead of the files. Its ``--timeout`` is per event, not a wall-clock limit like ``--timeout`` here; ``--set``
  (to change the seed) "cannot be combined with ``--workflow``", so the per-seed runs would need one temporary file
  per seed; and it prints its own error format instead of the ``/history`` entry the launcher reads the
  execution error, the saved images and the demo's image pairs from.
"""
