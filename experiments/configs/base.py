"""Defaults shared by every config; each config file overrides what it needs.

Field conventions: ``""`` means "not set" for strings (``data.data_dir``: TFDS's default,
``diffusion.importance``: uniform time sampling, ``sample.grid``: the solver's default grid);
``data.path`` is the user's own data for ``data.name = "image_folder"`` (a folder of PNG/JPEG
images, one sub-folder per class optional) or ``"text_file"`` (a text file), with
``data.image_size`` the side of the square images an image folder is resized and cropped
to (``0``: not set; both are unused by the other datasets, see ``diffjax.data.local``);
``diffusion.t_min = 0.0`` keeps the loss function's default; ``train.num_devices = 0`` uses
every device.
"""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "base"
    c.task = "gaussian"  # experiments.tasks: "gaussian" (points, images) or "text"
    c.seed = 0

    c.data = ml_collections.ConfigDict(dict(
        name="checkerboard", batch_size=256, data_dir="", dequantize=False, random_flip=False,
        prefetch=0, path="", image_size=0))

    c.model = ml_collections.ConfigDict(dict(
        name="mlp", class_conditional=False, dropout=0.0, dtype="float32",
        time_embedding="sinusoidal",
        # self-conditioning (mlp, unet): the model also gets its previous x0 estimate
        self_condition=False,
        # mlp (input_fourier_features=0: the points alone, no Fourier features)
        hidden=256, depth=3, time_embed_dim=128, mlp_ratio=2.0, input_fourier_features=0,
        input_fourier_scale=1.0,
        # unet
        ch=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(), resample_with_conv=True,
        scale_shift=False, attn_heads=1))

    c.diffusion = ml_collections.ConfigDict(dict(
        schedule="cosine", schedule_kwargs=ml_collections.ConfigDict(), prediction="v",
        loss="denoising", weighting="simple", weighting_kwargs=ml_collections.ConfigDict(),
        t_min=0.0, antithetic=True, importance="", cond_drop=0.0))

    c.optim = ml_collections.ConfigDict(dict(
        learning_rate=1e-3, warmup_steps=100, end_lr_ratio=0.0, weight_decay=0.0,
        decay_all=False, b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))

    c.train = ml_collections.ConfigDict(dict(
        num_steps=1000, log_every=100, checkpoint_every=500, keep_checkpoints=2,
        ema_decay=0.999, grad_accum=1, fsdp=False, num_devices=0, mesh="", steps_per_call=1))

    c.sample = ml_collections.ConfigDict(dict(
        solver="dpmpp_2m", steps=50, t_min=1e-3, grid="", num_samples=1000, batch_size=1000,
        guidance_scale=1.0, labels="uniform"))

    c.eval = ml_collections.ConfigDict(dict(
        num_samples=1000, nll_examples=1000, nll_batch_size=500, nll_rtol=1e-5, nll_atol=1e-5,
        nll_probes=1, nll_t_min=1e-3, seed=1,
        # image runs (experiments.image_metrics): an InceptionV3 .npz for FID ("" = no FID;
        # the weights are not shipped) and the feature network cache ("" = ~/.cache/diffjax)
        inception_weights="", feature_cache_dir=""))
    return c
