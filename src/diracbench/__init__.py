"""diracbench: a reproducible benchmark for DiracDiffusion and baselines.

Importing the package is cheap on purpose (no torch): the Snakefile imports helpers from it
at parse time, and `snakemake -n` must stay fast.
"""

__version__ = "0.1.0"
