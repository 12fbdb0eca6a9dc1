"""What a run leaves on disk, and how it is written safely.

* :mod:`.checkpoint`: the safetensors checkpoint format (docs/format.md), read and written;
  :mod:`.schema`: what an untrusted checkpoint's metadata and tensors may be;
  :mod:`.serialize`: deterministic safetensors bytes.
* :mod:`.rundir`: the run directory (config, metrics, results, resume state);
  :mod:`.ownership`: what ``--overwrite`` may replace; :mod:`.outputs`: where an output flag may write
  a file; :mod:`.lock`: one writer per run;
  :mod:`.atomic`: atomic file writes (temporary file, fsync, rename);
  :mod:`.jsonfile`: the one bounded reader of every JSON file and flag value (size, depth, integer digits).
"""
