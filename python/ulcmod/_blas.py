"""Load OpenBLAS (from the scipy-openblas32 wheel) before the compiled core needs it.

The core links against libscipy_openblas.so and finds it through its RPATH when both packages
sit in the same site-packages; loading it here by full path also covers other layouts (the
dynamic loader then reuses the already loaded library by its soname).
"""

import ctypes
import os

try:
    import scipy_openblas32

    ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True)),
                mode=ctypes.RTLD_GLOBAL)
except (ImportError, OSError):  # the RPATH may still find it; the core's import reports otherwise
    pass
