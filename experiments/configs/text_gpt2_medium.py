"""text8 masked diffusion with a GPT-2-medium-sized Transformer (350.4M parameters).

    python -m experiments.train --config=experiments/configs/text_gpt2_medium.py \
        --workdir=DIR --config.data.data_dir=/path/to/dir/with/text8 [--distributed] \
        [--config.train.mesh=data:N,model:M] [--config.train.fsdp=True]

dim 1024, depth 24, heads 16, adaLN cond_dim 320, peak learning rate 1.5e-4; everything else
(1024-character chunks, batch 512, bfloat16, the masked bound, the text8 file it needs, the
mesh / FSDP flags) is the shared config of ``text_gpt2_small.py`` (``get_gpt2_config``).
"""
from experiments.configs.text_gpt2_small import get_gpt2_config


def get_config():
    return get_gpt2_config("medium")
