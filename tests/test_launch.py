"""Launch argument blocks and the cuLaunchKernelEx structures (no GPU needed)."""

import ctypes

from cupysel import launch


def test_launch_config_matches_the_driver_layout():
    # CUlaunchAttribute: 4-byte id, 4 bytes of padding, a 64-byte value union.
    assert ctypes.sizeof(launch._Attr) == 72 and launch._Attr.value.offset == 8
    # CUlaunchConfig: 7 unsigned ints, then the stream, attrs pointer and count, 8-aligned.
    assert ctypes.sizeof(launch._Config) == 56
    assert (launch._Config.stream.offset, launch._Config.attrs.offset,
            launch._Config.nattrs.offset) == (32, 40, 48)


def test_programmatic_launch_carries_its_attribute():
    plain = launch.Launch(0x1000, (3, 2), (512,), 100, [("i", 1), ("p", "x")], "k")
    assert plain.config is None
    dep = launch.Launch(0x1000, (3, 2), (512,), 100, [("i", 1), ("p", "x")], "k", pdl=True)
    cfg = dep.config
    assert tuple(cfg.grid) == (3, 2, 1) and tuple(cfg.block) == (512, 1, 1) and cfg.smem == 100
    assert cfg.nattrs == 1
    assert cfg.attrs[0].id == launch._PROGRAMMATIC_STREAM_SERIALIZATION == 6
    assert cfg.attrs[0].value[0] == 1
    dep.bind({"x": 0xABC})
    assert dep.cells[1].value == 0xABC
