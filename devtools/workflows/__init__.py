"""The example-workflow generator behind ``scripts/build_example_workflows.py`` (see :mod:`.cli` for its usage).

Modules, one concept each:

* ``schema``         — what is read from ComfyUI's ``/object_info``: inputs in the frontend's order, widgets, trimming.
* ``graph``          — a workflow as defined here: nodes, links, placement, looks, the thumbnail's scene.
* ``formats``        — the UI graph and its API twin written from a workflow, and the frontend's UI-to-API conversion.
* ``notes``          — the text of the examples' Markdown notes.
* ``model_examples`` — the examples for full-size models (SD1.5 ... FLUX.1, on vs off, SamplerCustomAdvanced).
* ``toy_example``    — the toy-world example.
* ``catalogue``      — every example, in README order.
* ``thumbnails``     — the JPEG thumbnail of each example (Pillow).
* ``files``          — where the files go, their text, and the ``/object_info`` snapshot they are built with.
* ``cli``            — the command: write, or ``--check``.
"""
