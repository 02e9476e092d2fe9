"""One run: built once, trained by the jitted step, checkpointed, resumed.

  * `run`: `create_run(config, workdir)`, the run built from a config;
  * `steps`: the train state, optimiser, jitted train and eval steps;
  * `step_builder`: `build_step(config, mesh, ...)`, a run's model set,
    optimiser, initialiser and jitted steps built in one place;
  * `loop`: `train_and_evaluate`, the training loop and the run's summary;
  * `summary`: `RunSummary`, what WORKDIR/summary.json holds, and `write`;
  * `grid`, `grid_step`: many runs trained as one program;
  * `checkpoints`, `preemption`, `metric_writer`, `progress`: what a loop
    writes, and how it stops and resumes;
  * `config_checks`, `preflight`, `run_record`: the checks before any work,
    and the config a run records and resumes under.
"""
