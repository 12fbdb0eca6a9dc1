"""The landscape command-line tools: thin callers of the :mod:`landscape` library on the toolkit's files.

Each tool rebuilds models and data from checkpoints and run directories (:mod:`.artifacts`, :mod:`.cli`),
calls a library function and writes its result: :mod:`.barrier` (``python -m landscape.barrier A B``),
:mod:`.subspace` (hull and plane, with :mod:`.plane`), :mod:`.hessian` (with :mod:`.hessian_report`,
:mod:`.hessian_output`, :mod:`.pyhessian_backend`), :mod:`.align`; flags come from :mod:`core.options`, figures
from :mod:`.plots`. The library never imports this package.
"""
