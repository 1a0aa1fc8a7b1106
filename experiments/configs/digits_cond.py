"""Class-conditional digits (scikit-learn 8x8, levels 0..16) for classifier-free guidance, on CPU.

    python -m experiments.train --config=experiments/configs/digits_cond.py --workdir=workdirs/digits_cond
    python -m experiments.sample --workdir=workdirs/digits_cond --class=3 --guidance=3 --num_samples=64
    python -m experiments.guidance_eval --workdir=workdirs/digits_cond

The U-Net of ``digits.py`` with a class embedding (10 digits + the null class 10). Labels are
replaced by the null class with probability ``diffusion.cond_drop = 0.15`` during training, so
one network learns both p(x | y) and p(x) and ``experiments.sample --guidance=W`` mixes them
as ``uncond + W (cond - uncond)`` (W = 0: unconditional, W = 1: conditional, W > 1: guided).
Training costs what ``digits.py`` costs (the class embedding is negligible).

``sample.guidance_scale`` (the scale of ``experiments.train``'s final samples and of
``experiments.evaluate``) is 1, the plain conditional model; ``guidance_eval`` sets the scales
it reports (``guidance_eval.scales``). Targets (``experiments.guidance_eval``): an SVC trained on
the real digits assigns >= 95% of samples to the requested class at guidance 3; inpainting the
bottom half of held-out digits keeps the top half exactly. Measured figures:
``bench/RESULTS.md``.
"""
from experiments.configs import digits


def get_config():
    c = digits.get_config()
    c.name = "digits_cond"

    c.model.class_conditional = True
    c.diffusion.cond_drop = 0.15

    c.sample.guidance_scale = 1.0
    c.sample.labels = "uniform"  # no class given: cycle through the 10 classes

    c.guidance_eval = dict(
        scales=(0.0, 1.0, 3.0),   # classifier-free guidance scales to report
        samples_per_class=100,    # class-match rate: samples drawn for each of the 10 classes
        inpaint_examples=0,       # held-out digits to inpaint (0: the whole test split, 359)
        inpaint_solver="ddpm",    # the replacement method needs a stochastic sampler
        inpaint_steps=50,
        inpaint_resample=10,      # RePaint: each step 10 times (1 = plain replacement method)
        seed=2,
    )
    return c
