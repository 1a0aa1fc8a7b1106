"""diffjax.registry.Registry: the one name -> implementation table of every family."""
import pytest

import diffjax as dj
from diffjax.registry import Registry


def test_register_get_and_errors_name_the_argument():
    reg = Registry("widget")

    @reg.register("b")
    def b():
        return 2

    reg.add("a", 1)
    assert reg.names() == ("b", "a") and list(reg) == ["b", "a"] and len(reg) == 2
    assert reg.get("a") == 1 and reg.get("b") is b and "a" in reg and "c" not in reg
    with pytest.raises(ValueError, match=r"widget must be one of \['b', 'a'\], got 'c'"):
        reg.get("c")
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add("a", 3)
    with pytest.raises(ValueError, match="non-empty string name"):
        reg.add("", 3)


def test_families_use_it():
    assert dj.schedules.NAMES == dj.schedules.SCHEDULES.names()
    assert dj.grids.NAMES == dj.grids.GRIDS.names() == ("uniform_t", "uniform_logsnr", "karras", "uniform_angle")
    assert dj.discrete.METHODS == dj.discrete.sampling.SAMPLERS.names()
    with pytest.raises(ValueError, match="method must be one of"):
        dj.discrete.sample(None, None, (1, 2), process=dj.discrete.masked(3), steps=2,
                           method="greedy")
    with pytest.raises(ValueError, match="schedule must be one of"):
        dj.schedules.get("linear")
    with pytest.raises(ValueError, match="grid must be one of"):
        dj.grids.get("linear", dj.schedules.cosine(), 10)
