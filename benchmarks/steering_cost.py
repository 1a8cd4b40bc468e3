"""What one Learn-to-Steer iteration costs, in time and memory, compared with a plain denoiser forward.

The command of :mod:`steering_bench` (next to this file), which says what is measured and how.

Run on CPU (tiny models take seconds; full-size SD2.1 is slow on CPU, use a small resolution)::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model sd21 --size tiny --device cpu
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model flux_dev --size tiny --device cpu
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model sd21 --size full --resolution 256 \\
        --device cpu --repeats 3 --json sd21_cpu.json
    # recomputation off and on, fp8 weights, ComfyUI's low-VRAM loading (tiny: seconds)
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model flux_dev --size tiny --device cpu \\
        --resolution 128 --text-tokens 32 --dtype fp8_e4m3fn --vram lowvram --memory fast,low --lean

Run on a GPU machine (the Python environment of that ComfyUI)::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model sd21 --size full --resolution 512 \\
        --device cuda --dtype fp16 --repeats 5
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model flux_dev --size full --resolution 512 \\
        --device cuda --dtype bf16 --repeats 5
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model flux_dev --size full --resolution 1024 \\
        --device cuda --dtype fp8_e4m3fn --vram lowvram --card-gib 12 --memory fast,low --lean

``benchmarks/gpu_check.sh`` runs the prepared set of GPU measurements (SD2.1, SDXL, FLUX.1-dev bf16/fp8/low-VRAM) in
one command and prints one summary table.

Full FLUX.1-dev needs about 24 GB for its bf16 weights plus activations: use a GPU with 40 GB or more and never try
it on a CPU box. The full-probability reference (c) for FLUX at 1024 px needs far more memory than any single GPU
has; an out-of-memory there is reported as a lower bound.
"""

from steering_bench.cli import main  # this file's folder is sys.path[0] when it runs as a script

if __name__ == "__main__":
    main()
