"""The results side: run records -> tables (one per pair build) of rows (method settings, over seeds) -> md, csv,
html, LaTeX and plots; none of it reads trainer code.

Modules, bottom up: `store` (the records a results dir holds), `groups` (rows: runs of one setting, with their id and
label), `costs` (what each run is charged), `estimates` (tables of scores, intervals and costs), `render` (md, csv,
LaTeX), `html`, `plots` and `curves` (training-loss logs), and `build` (`harness leaderboard`: every output written).

It is a pure function of the records under `<results_dir>/runs/` (and, for the loss plots, the training logs they
point to): the same files give byte-identical outputs
(no build time, sorted rows, fixed number formats, deterministic PNGs). A bad record is reported and skipped,
never deleted; the build takes no lock.

Tables. A table holds the runs of one *build* of a pair: same pair name, same models (weights or hub revision,
tokenizers: `RunRecord.models`), same data (train and eval splits' hashes) and evaluation settings (doc
limit, chat template: `RunRecord.data`). Runs of different builds are never averaged, compared or superseded
across builds; when a pair name has several, each table's title names its build (`tiny [build 3f2a1c]`) and a
note says what differs. Schema-1 records pin nothing beyond the model references and the doc limit: they form
tables of their own, marked unpinned. Trial runs (a budget other than the pair's, `training.trial`: see harness.trial)
form tables of their own after the pair's main ones (`tiny [trial 3f2a1c: limit 20]`); `compare --pair tiny` picks
the main build.

Rows. Within a table, runs are grouped by method and settings (harness.experiment.settings_key: the experiment but
its seed), so runs with different settings are never averaged together. A row's `id` is that key: it does not change
when other runs are added, and `compare` accepts it. Labels are for display: when a table has several settings of one
method, the label names the settings that differ, e.g. `hybrid (alpha=0.3)`.
Reference rows: the teacher and the student before distillation, each averaged over its distinct
evaluations in the table (all made with the table's settings; evaluations of different sizes are never
averaged).

Scores are the primary metric of each benchmark in %, the mean over the row's seeds with a 95% t interval over
the seeds' scores (harness.stats); a row with one seed has no interval. Gap recovered = (after - before) /
(teacher - before) on the mean over the benchmarks, per seed, with its t interval (the reference rows' means taken
as exact). Detectable: the minimum detectable difference (harness.stats) between the row and another with as many
seeds and the same spread, on the mean over benchmarks (or the one benchmark): the smallest true difference an
unpaired two-sided t test at alpha 0.05 finds with power 0.8, the row's seed SD taken as the true one.

Tuned. A run whose settings `harness tune` chose records how (`train_config.tuning`: grid, budget, choice, dev
score); such rows are rows of their own (their settings differ) and, in tables that have one, a `tuned` column gives
the choice, the grid and the trial budget ("–": untuned).

Truncated. Where a record's scores report it (the `truncated` metric, from the generators' finish reasons), the share
of each benchmark's completions that hit their token budget, in %: the mean over the row's runs (or the reference's
evaluations) that report it, without an interval. The columns appear only in tables (and csv / LaTeX outputs) with
such a record, so records made before it was counted render as they did, and a row without it shows "–".

Cost. Device-hours (wall seconds x devices / 3600) and estimated FLOPs per run, each a mean over the row's
seeds. A phase served from a cache (teacher supervision) carries the cost of the one build that filled the
cache entry, identified by its `cache_key`. The leaderboard charges that build once: it is split equally among
all runs in the results dir that used the entry (the run that built it and every run that reused it), so
the amortised totals of all runs add up to what was really spent. The build cost is the builder's
measured phase when its record is present, else the cost carried by the reusing runs. "Standalone" charges
each run the full build cost, i.e. what the run would cost alone; it does not depend on which other runs
exist. The cost ratio against a baseline ("x cheaper") is given for both device-hour totals.
"""
