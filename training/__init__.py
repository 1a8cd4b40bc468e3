"""Training tools for Learn-to-Steer relation classifiers, run as ``python -m training <command>``.

Commands: ``triplets`` (build balanced image/relation items), ``invert`` (record attention maps by dual inversion),
``train`` (fit a classifier), ``export`` (write the final .safetensors) and ``eval`` (accuracy per relation and step;
GenEval-rule position scoring). This package may use diffusers, transformers, tqdm and PIL; it never imports ComfyUI.
"""
