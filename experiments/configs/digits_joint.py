"""Joint digits: (image, label) pairs of scikit-learn's 8x8 digits from one network, on CPU.

    python -m experiments.train --config=digits_joint --workdir=workdirs/digits_joint
    python -m experiments.sample --workdir=workdirs/digits_joint --num_samples=100 --output=/tmp/j.npy
    python -m experiments.sample --workdir=workdirs/digits_joint --class=3 --output=/tmp/three.npy
    python -m experiments.evaluate --workdir=workdirs/digits_joint

A product process (`diffjax.joint`): the Gaussian process of ``digits.py`` on the image (cosine
schedule, v-prediction and v-weighting) and a masked process (linear schedule) on the label,
the digit 0..9 with the mask token 10. One network, the ``digits.py`` U-Net with the label as
its class embedding, the label's time as its second time input and a head from the middle block
to 10 logits (`diffjax.models.JointUNet`), is trained with independent times per modality; the
image is given clean in 20% of the examples and the label in 10% (``diffusion.clean_prob``), so
the network sees a clean image with a masked label (classification) and a clean label with a
noisy image (class-conditional generation) exactly as they are sampled. The label loss is the
cross-entropy on masked labels.

Sampling (`diffjax.joint.sample`): both parts over one grid (dpmpp_2m for the image, the
masked ancestral step for the label), the image guided towards its label once the label is
revealed (classifier-free guidance against the masked label, ``sample.joint_guidance_scale``);
clamping the image and generating the label (argmax) classifies by diffusion; clamping the label
generates that class, with guidance ``sample.guidance_scale``.

Targets (``experiments.evaluate``, judged by the SVC of ``experiments.metrics``):
``joint_agreement`` >= 0.90 (1000 joint pairs: the SVC agrees with the generated label),
``classification_accuracy`` >= 0.90 (the 359 held-out digits classified by diffusion),
``conditional_accuracy`` >= 0.90 (100 label-clamped samples per class are the requested class).
Measured figures and training time: ``bench/RESULTS.md``.
"""
from experiments.configs import digits


def get_config():
    c = digits.get_config()
    c.name = "digits_joint"
    c.task = "joint"

    c.model.name = "joint_unet"

    c.diffusion.label_schedule = "linear"
    c.diffusion.label_loss = "ce"
    c.diffusion.label_weight = 1.0
    c.diffusion.clean_prob = (0.2, 0.1)  # (image, label) given clean in training

    c.sample.solver = "dpmpp_2m"
    c.sample.steps = 50
    c.sample.guidance_scale = 2.0  # label-conditioned samples
    c.sample.joint_guidance_scale = 2.0  # joint samples: the image guided towards its revealed label
    c.sample.temperature = 1.0  # label draws in joint sampling

    c.eval.num_samples = 1000
    c.eval.samples_per_class = 100
    c.eval.classify_examples = 0  # the whole held-out split (359 digits)
    c.eval.guidance_scales = (1.0, 2.0)
    return c
