"""Mutants: diffjax.platform (the CPU workarounds' switch and the convolution rewrite)."""
from mutations import Mutant

PLATFORM = "diffjax/platform.py"

TESTS = {
    PLATFORM: ["tests/test_platform.py"],
}

MUTANTS = [
    # the input gradient convolves with the flipped kernel; unflipped it is wrong for any
    # kernel that is not point-symmetric
    Mutant("platform.input_grad_kernel_not_flipped", PLATFORM,
           "wt = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))",
           "wt = jnp.transpose(w, (0, 1, 3, 2))"),
    # dilated convolutions are not what the gradient forms compute
    Mutant("platform.rewrites_dilated_convolutions", PLATFORM,
           'if tuple(params["lhs_dilation"]) != (1, 1) or tuple(params["rhs_dilation"]) != (1, 1):',
           'if tuple(params["lhs_dilation"]) != (1, 1):'),
    # "auto" must mean "only where every device is a CPU"
    Mutant("platform.auto_is_always_on", PLATFORM,
           "    return all_cpu(devices)\n\n\n@functools.lru_cache",
           "    return True\n\n\n@functools.lru_cache"),
]
