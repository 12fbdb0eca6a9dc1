"""The permutation-alignment methods' names, apart from the matching code (which imports ``torch.fx``), so that
the command-line tools can offer them without loading it."""

METHODS = ("weights", "activations")
METHOD_NAMES = {"weights": "weight matching", "activations": "activation matching"}
