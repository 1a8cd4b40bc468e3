"""Peak memory of plain sampling vs a Learn-to-Steer iteration for full-size models, accounted without a GPU.

The command of :mod:`memory_account` (next to this file), whose docstring says what is accounted and how. It prints
a markdown table: per family, resolution and weight format, the peak of a plain sampling step, of a steering
iteration without recomputation (memory ``fast``) and with it (memory ``low``), the ratio low / plain against the
1.3x target, and the card classes that fit. Runs on CPU in about a minute (every model is built on the meta device)::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/memory_account.py
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/memory_account.py --rows flux_dev:1024:fp8 --json flux.json

Check the account against measured CPU memory (tiny models and full-size SD1.5 / SD2.1 at 256 px; several
minutes, about 6 GB of RAM)::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/memory_account.py --validate
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/memory_account.py --validate sd15:512
"""

from memory_account.cli import main  # this file's folder is sys.path[0] when it runs as a script

if __name__ == "__main__":
    main()
