"""`python -m jax_resnets.compare DIR... --out=OUT`."""
import sys

from jax_resnets.compare import report

sys.exit(report.main())
