"""Peak memory of plain sampling vs a Learn-to-Steer iteration for full-size models, accounted without a GPU.

The command of :mod:`memory_account` (next to this file), whose docstring says what is accounted and how. It prints
a markdown table: per family, resolution and weight format, the peak of a plain sampling step, of a steering
iteration without recomputation (memory ``fast``) and with it (memory ``low``), the ratio low / plain against the
1.3x target, and the card classes that fit. Runs on CPU, no GPU and little memory (every model is built on the meta
device; about two CPU-minutes for the whole table)::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/memory_account.py
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/memory_account.py --rows flux_dev:1024:fp8 --json flux.json

Check the account against measured CPU memory (tiny models and full-size SD1.5 / SD2.1 at 256 px by default; each
model is measured in a fresh process: tens of minutes on two cores, about 5 GB of RAM; SD1.5 at 512 px needs 9 GB)::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/memory_account.py --validate
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/memory_account.py --validate sd15:512
"""

from memory_account.cli import main  # this file's folder is sys.path[0] when it runs as a script

if __name__ == "__main__":
    main()
