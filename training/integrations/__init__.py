"""SWAMP inside training frameworks: PyTorch Lightning and the Hugging Face ``Trainer``.

Each integration is a callback for the framework's own trainer, built from :mod:`training`'s public blocks
(masks, :class:`core.averaging.SWA`, :func:`core.averaging.recalibrate_batchnorm`), and a driver that runs
SWAMP cycles with it, one ``fit``/``train`` per particle, through :func:`training.integrations.cycles.swamp_cycles`:

* :mod:`training.integrations.lightning`: ``SWAMPCallback`` and ``swamp_lightning`` (``pip install
  swamp-toolkit[lightning]``);
* :mod:`training.integrations.huggingface`: ``SWAMPTrainerCallback`` and ``swamp_huggingface``
  (``pip install swamp-toolkit[huggingface]``).

The framework is imported only when one of these modules is imported, so ``import training`` never needs
it; without it the import fails with a one-line ``ImportError`` that names the extra to install.
"""
