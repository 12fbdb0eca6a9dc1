"""Loss-landscape analyses of SWAMP / IMP checkpoints: barriers, subspaces, Hessian spectra."""
