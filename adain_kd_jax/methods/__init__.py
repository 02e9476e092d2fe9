"""Methods as tables of loss terms.

`TERMS` maps a term name to its class (a pure function of the step's
outputs, see `base.py`); `METHODS` maps a method name to the terms it adds
up, each weighted by `config.loss.<term>`. Adding a method: write its term in
`adain_terms.py` or `baseline_terms.py` (or a module of its own), register it
in `TERMS`, name the method in `METHODS`, and declare its weight (and
settings, if any: a group named in the term's `config_fields`) in
`configs/default.py`. A module trained with the
student (VID's regressors, say) is declared by its term (`Needs.adapters`,
an `Adapter` next to its module) and built by the objective. Nothing else
knows a method by name. docs/architecture.md walks through it.
"""

from adain_kd_jax import cli
from adain_kd_jax.methods import adain_terms
from adain_kd_jax.methods import baseline_terms
from adain_kd_jax.methods import feature_terms
from adain_kd_jax.methods import relational_terms
from adain_kd_jax.methods import two_stage_terms
from adain_kd_jax.methods.base import Adapter
from adain_kd_jax.methods.base import Context
from adain_kd_jax.methods.base import Needs
from adain_kd_jax.methods.base import Outputs
from adain_kd_jax.methods.base import Shapes
from adain_kd_jax.methods.base import Term

TERMS = {
    'ce': baseline_terms.CrossEntropy,
    'kd': baseline_terms.KD,
    'logit_mse': baseline_terms.LogitMSE,
    'fitnet': baseline_terms.FitNet,
    'at': baseline_terms.AT,
    'stat_l2': adain_terms.StatL2,
    'adain': adain_terms.AdaIN,
    'fm': adain_terms.FeatureMatching,
    'stat_mean': adain_terms.StatMean,
    'crd': baseline_terms.CRD,
    'dkd': baseline_terms.DKD,
    'vid': baseline_terms.VID,
    'sp': relational_terms.SP,
    'cc': relational_terms.CC,
    'rkd': relational_terms.RKD,
    'pkt': relational_terms.PKT,
    'nst': relational_terms.NST,
    'kdsvd': relational_terms.KDSVD,
    'dist': relational_terms.DIST,
    'ofd': feature_terms.OFD,
    'reviewkd': feature_terms.ReviewKD,
    'srrl': feature_terms.SRRL,
    'fsp': two_stage_terms.FSP,
    'ab': two_stage_terms.AB,
    'ft': feature_terms.FT,
    'simkd': feature_terms.SimKD,
}

# The terms each method adds up, in this order (weights: config.loss).
METHODS = {
    'none': ('ce',),
    'kd': ('ce', 'kd'),
    'logit_mse': ('ce', 'logit_mse'),
    'fitnet': ('ce', 'fitnet'),
    'at': ('ce', 'at'),
    'stat_l2': ('ce', 'stat_l2'),
    'adain': ('ce', 'adain', 'fm', 'stat_mean'),
    'adain_kd': ('ce', 'adain', 'fm', 'stat_mean', 'kd'),
    'crd': ('ce', 'crd'),
    'dkd': ('ce', 'dkd'),
    'vid': ('ce', 'vid'),
    'sp': ('ce', 'sp'),
    'cc': ('ce', 'cc'),
    'rkd': ('ce', 'rkd'),
    'pkt': ('ce', 'pkt'),
    'nst': ('ce', 'nst'),
    'kdsvd': ('ce', 'kdsvd'),
    'dist': ('ce', 'dist'),
    'ofd': ('ce', 'ofd'),
    'reviewkd': ('ce', 'reviewkd'),
    # SimKD's SRRL recipe: CE 1, KD 1 at tau 4, SRRL 1.
    'srrl': ('ce', 'kd', 'srrl'),
    # RepDistiller's FSP and AB: a first phase on their loss
    # (config.init_epochs), then CE alone (its -a 0; loss_kd = 0).
    'fsp': ('ce', 'fsp'),
    'ab': ('ce', 'ab'),
    # KD trained with DOT (DOT_METHODS), mdistiller's KD + DOT recipe.
    'dot': ('ce', 'kd'),
    # RepDistiller's FT recipe: CE 1, no KD, FT 200 (-a 0 -b 200).
    'ft': ('ce', 'ft'),
    # SimKD's recipe (DefangChen/SimKD scripts/run_distill.sh, -c 0 -d 0
    # -b 1): its MSE alone, no CE and no KD.
    'simkd': ('simkd',),
}
# The methods trained with DOT (training/dot.py), the distillation-oriented
# trainer: a method of the table, not a config switch, because DOT is
# published as a method of its own (KD + DOT, its own row in the tables) and
# a sweep, a campaign or a grid then names it like any other; its terms are
# those of KD. Their step differentiates the TASK_TERMS and the other terms
# apart (training/dot_step.py).
DOT_METHODS = ('dot',)
# The terms of DOT's task gradient; every other term is distillation.
TASK_TERMS = ('ce',)
# The terms that read config.points (feature points with their weights).
POINT_TERMS = tuple(name for name, cls in TERMS.items() if cls.reads_points)
# Every top-level config field a term reads besides config.loss (its
# settings group, config.points): what differs from method to method.
SETTING_FIELDS = tuple(dict.fromkeys(
    field for cls in TERMS.values() for field in cls.config_fields))


def setting_fields(method: str) -> tuple[str, ...]:
  """The fields of SETTING_FIELDS that `method`'s terms read."""
  return tuple(dict.fromkeys(field for name in METHODS[method]
                             for field in TERMS[name].config_fields))


def has_first_phase(method: str) -> bool:
  """Whether a term of `method` trains in a first phase (FSP, AB, FT)."""
  return any(TERMS[name].init_trains for name in METHODS[method])


def check_method(method: str, field: str = 'method') -> None:
  """ValueError naming `config.<field>` unless `method` is in METHODS."""
  if method not in METHODS:
    raise ValueError(f'Unknown method {method!r} (config.{field}). Valid '
                     f'methods: {", ".join(METHODS)}.'
                     + cli.did_you_mean(method, METHODS))


def create_terms(config, context: Context) -> tuple[tuple[str, Term, float],
                                                    ...]:
  """(name, term, weight) for each term of `config.method` that counts.

  A term with weight 0 is left out (and computes nothing), except 'ce',
  which is always computed for the metrics, and a term with a first phase
  (`init_trains`), which that phase trains. The method is checked by the
  caller (`check_method`).
  """
  out = []
  for name in METHODS[config.method]:
    weight = float(config.loss[name])
    if name == 'ce' or weight != 0.0 or TERMS[name].init_trains:
      out.append((name, TERMS[name].from_config(config, context), weight))
  return tuple(out)


__all__ = ['DOT_METHODS', 'METHODS', 'POINT_TERMS', 'TASK_TERMS', 'SETTING_FIELDS', 'TERMS', 'Adapter', 'Context', 'Needs',
           'Outputs', 'Shapes', 'Term', 'check_method', 'create_terms',
           'setting_fields']
