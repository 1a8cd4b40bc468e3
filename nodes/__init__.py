"""ComfyUI nodes of the Learn-to-Steer pack (V3 schema).

Kept free of imports on purpose: ComfyUI loads the nodes through ``extension.py`` from the pack's lazy
``comfy_entrypoint``, and modules that need no ComfyUI (``capture``, ``autograd``) stay importable for unit tests.
"""
