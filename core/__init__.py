"""The foundation floor: what training, the landscape library, their tools and the studies all stand on.

Errors and command-line exits (:mod:`.errors`), seeds (:mod:`.seeds`), devices (:mod:`.device`), progress
bars (:mod:`.progress`), importing user code only with consent (:mod:`.imports`), the files the toolkit
writes and reads (:mod:`.artifacts`: atomic writes, the checkpoint format and its validation, the run
layout, ownership of outputs), the model zoo (:mod:`.models`), data sets (:mod:`.data`), weight averaging
and BatchNorm recalibration (:mod:`.averaging`), masks and pruning (:mod:`.pruning`) and evaluation
(:mod:`.evaluate`). Nothing here imports :mod:`training`, :mod:`landscape` or :mod:`studies`.
"""

__version__ = "0.1.0"
