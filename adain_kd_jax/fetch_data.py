"""`python -m adain_kd_jax.fetch_data`: the old name of `data.fetch`.

Kept so that the command in older notes and set-up scripts still works.
"""

import sys

from adain_kd_jax.data import fetch

if __name__ == '__main__':
  sys.exit(fetch.main())
