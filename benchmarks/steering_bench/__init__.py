"""What one Learn-to-Steer iteration costs, in time and memory, compared with a plain denoiser forward.

On one random-weight model, in one run, the benchmark (``benchmarks/steering_cost.py``) prints:

1. the time of a plain conditional forward (``calc_cond_batch`` on the positive conditioning only, inference mode,
   attention_pytorch (SDPA): the backend steering differentiates and ComfyUI's default on NVIDIA GPUs; where ComfyUI
   picked another backend, e.g. sub-quadratic attention on CPU, that forward is shown as well);
2. the time of one steering iteration for each value of the steering node's ``memory`` input given by ``--memory``
   (e.g. ``fast,low``: without and with per-block recomputation), measured inside the pack's own
   ``SteeringRun.steer`` as the second of two iterations, so its once-per-step setup is not counted (attention
   capture installed by ``SteeringRun.start``, forward under ``gradient_mode`` with ``autograd_weights``, the blocks
   recomputed in the backward where ``memory`` says so, ``classifier_input``, a ``RelationClassifier`` forward,
   cross-entropy and ``torch.autograd.grad`` with respect to the latent), the ratio (2)/(1) against the target of
   3.3x and, with both, the ratio low/fast against the target of 1.4x. The weight conversion of ``autograd_weights``
   (once per sampling run, not per iteration) is timed separately. Passes are timed round-robin (medians of
   ``--repeats`` rounds), so load from other processes hits them alike; a pass that runs out of GPU memory is
   reported as such and the others are still timed;
3. the peak memory above the built model, and the total with it, of (p) plain sampling's forward (the no-grad
   forward (1)), (a) one steering iteration per ``memory`` input, (b) a plain forward+backward of a scalar loss on
   the denoiser output with respect to the latent (no capture, same backward-capable attention function as
   steering) and (c) a reference that materialises the full attention probabilities of every attention call (UNet
   attn1 and attn2, FLUX/SD3 full joint text+image attention) and keeps them in the graph, as the official code does.
   Ratios: totals (a)/(p) (target <= 1.3x: steering fits wherever plain sampling fits), (a, low)/(a, fast), growth
   (a)/(b) (target <= 1.3x) and (a)/(c) (target <= 0.5x). ``--lean`` leaves out (b) and (c).

Weights (``--dtype``) are stored as ComfyUI's ``UNETLoader`` stores them for that ``weight_dtype`` (fp8 included) and
computed in ComfyUI's choice of dtype; ``--vram lowvram`` / ``novram`` loads the model the way ComfyUI's sampling does
under ``--lowvram`` / ``--novram`` (``--card-gib``: as on a smaller card), so that layers stream their weights
(:mod:`.loading`).

On CUDA the peaks come from the allocator (``torch.cuda.max_memory_allocated``). On CPU there is no allocator
counter: each memory figure is taken in a fresh subprocess of the command (``--measure-one MODE``) as the growth of
the peak resident set size over the RSS after the model is built and the measured pass has run once; these figures
are approximate.

ComfyUI is imported as a library from ``COMFYUI_PATH``; the pack is imported as a package (the repo root registered
under a package name), so its ``nodes`` subpackage never shadows ComfyUI's top-level ``nodes`` module. Models are
built by direct construction with random weights: ``--size tiny`` uses the integration tests' tiny configs
(``tests/comfy_test_pack/tiny_specs.py``, same attention layout as the real models), ``--size full`` the real
architectures (SD1.5, SD2.1-base, SDXL, SD3-medium, FLUX.1-dev). Text conditioning is random (no text encoder).

Modules, one concept each: ``models`` (the benchmarkable architectures), ``comfy_modules`` (ComfyUI and the pack
imported as libraries), ``loading`` (weight dtype and placement as ComfyUI's loaders do them), ``random_weights``,
``bench`` (the built model, conditioning, latent and classifier), ``passes`` (the measured passes),
``reference_capture`` (the full-probability reference), ``timing``, ``memory``, ``report``, ``setup_check``
(``--check-setup``), ``cli`` and ``summary`` (one table from several runs, for ``benchmarks/gpu_check.sh``).
``benchmarks/steering_cost.py`` is the command.
"""
