"""Many runs: sweeps, campaigns, their tables, figures and paired statistics.

  * `sweep`: a grid of methods x seeds (one process, `--parallel`, `--grid`);
  * `campaign`, `campaign_grid`, `parallel`: a plan of runs that adds up over
    short slots;
  * `report`, `plots`, `published`, `paired`: tables, figures, published
    numbers and paired confidence intervals;
  * `stats_swap`: the statistics-swap diagnostic of a teacher.
"""
