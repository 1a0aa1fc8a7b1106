"""Joint generation of several modalities with one process per modality.

A :class:`ProductProcess` (``product(gaussian(schedule), masked(10))``) noises each part of a
state tuple with its own process and time; it has the interface of the other processes
(``alpha``, ``sample_marginal``, ``posterior``, ``nelbo``, plus ``log_marginal``). ``sample``
advances every part over one shared time grid with the existing Gaussian solvers and the
discrete ancestral step, or clamps some parts (classification by diffusion, class-conditional
generation with classifier-free guidance)::

    proc = diffjax.joint.product(diffjax.gaussian(diffjax.schedules.cosine(), "v"),
                                 diffjax.discrete.masked(10))
    (images, labels), info = diffjax.joint.sample(model_fn, key, ((64, 8, 8, 1), (64,)),
                                                  process=proc, solver="ddpm", steps=100)

``model_fn(xs, ts) -> outs`` takes and returns tuples, one entry per part
(``diffjax.joint.processes``).
"""
from diffjax.joint import processes, sampling
from diffjax.joint.processes import ProductProcess, product
from diffjax.joint.sampling import sample

__all__ = ["ProductProcess", "product", "sample", "processes", "sampling"]


def __dir__():
    return sorted(__all__)
