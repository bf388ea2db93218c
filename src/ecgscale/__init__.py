"""ecgscale: controlled scaling-law studies of ECG models.

One folder per pipeline stage (see docs/ARCHITECTURE.md): data -> models -> objectives/train ->
evaluate -> scaling -> study/report, with design-space exploration alongside.
"""

__version__ = "0.1.0"
