"""The study grid: every method and seed of an experiment as resumable sub-runs of :mod:`training`.

``python -m studies.grid --out DIR`` (:mod:`.cli`) plans the grid (:mod:`.args`, :mod:`.plan`), records it
(:mod:`.manifest`), runs it in this process or as batch jobs (:mod:`.launchers`, :mod:`.submitit_launcher`,
:mod:`.workers`), extends it to families of studies (:mod:`.family`) and reports where each sub-run stands
(:mod:`.status`). The analyses of a finished grid are the other modules of :mod:`studies`.
"""

TARGET = "studies.grid.cli"  # the module whose main() ``python -m studies.grid`` runs
