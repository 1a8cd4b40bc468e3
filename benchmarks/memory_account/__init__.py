"""How much GPU memory plain sampling and a steering iteration need, for full-size models, accounted without a GPU.

The command ``benchmarks/memory_account.py`` builds each full-size denoiser (SD1.5, SD2.1, SDXL, SD3-medium,
FLUX.1-dev) with ComfyUI's own classes on the **meta device** (shapes and dtypes, no memory, no values), runs three
passes and counts the tensor memory they allocate:

1. ``plain``: one CFG sampling step (``comfy.samplers.sampling_function``, inference mode; cond and uncond batched:
   batch 2 for the SD families, 1 for FLUX.1-dev at CFG 1);
2. ``fast``: one steering iteration without recomputation (memory ``fast``): the pack's attention capture, a forward
   with gradients, ``classifier_input``, the relation classifier, cross-entropy, the gradient to the latent;
3. ``low``: the same with per-block recomputation (memory ``low``, ``l2s_core.recompute.recomputed_blocks`` over
   ``nodes.memory.recomputable_blocks``).

Peak = resident weights + the highest live total of the pass's allocations. The count is a dispatch mode that sees
every allocation on any device (:mod:`.tracker`); the attention kernel is modelled as a fused (flash) kernel for the
GPU table, or as SDPA's math path for the checks on CPU (:mod:`.attention`). ``--validate`` compares the account
with measured CPU memory (peak RSS growth) of the pack's real passes on models that fit here.

Modules, one concept each: ``tracker`` (live bytes and peak), ``attention`` (the kernel models), ``meta_device``
(what meta tensors cannot answer), ``architectures`` (configs and table rows), ``comfy_env`` (ComfyUI and the pack
as libraries), ``build`` (model, conditioning, classifier), ``passes`` (the three passes), ``account`` (one pass's
peak), ``report`` (table, card classes), ``measure`` (CPU measurement in a fresh process), ``validate`` (predicted
vs measured) and ``cli``. Only ``tracker``, ``attention`` and ``meta_device`` import without ComfyUI.
"""
