# cmr-stylize: the two commands are `make reproduce` and `make test` (both create .venv on first use).
# Inside an activated conda environment other than base (`conda env create -f environment.yml && conda activate
# cmr-stylize`), make installs into that environment and uses it instead of building .venv.
PYTHON ?= python3
CONDA_ENV := $(if $(and $(CONDA_PREFIX),$(filter-out base,$(CONDA_DEFAULT_ENV))),$(CONDA_PREFIX))
VENV := $(or $(CONDA_ENV),.venv)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?=
DATA ?=
DATA_DIR ?=
SEED ?= 0
SEEDS ?=
JOBS ?=
FORCE ?=
C0_SPACING ?=
GPUS ?=
BEYOND ?=
ENGINE ?=
T2_DIR ?=
NBVAL := build/nbval

.PHONY: venv reproduce test unit integration lab book real-data nbval sync-check sync bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	@touch $(STAMP)

## Regenerate the phantom (if needed), run every notebook with papermill, write results/ and figures/.
## Unchanged steps are reused (FORCE=1 reruns them); PROFILE=paper DATA_DIR=/path SEED=n pick the run;
## SEEDS=3 runs every Table 2/3 row with 3 seeds (default: the profile's); JOBS=n notebooks side by side;
## the cropped MS-CMRSeg copy also needs C0_SPACING=lge and T2_DIR=/path/to/MyoPS (setting 1's T2);
## DATA=mscmrseg2019 finds the real sample set and sets both itself (profile 'real', outputs in real/<name>/).
## GPUS=0,1,2,3 spreads the JOBS parallel rows over those GPUs (without JOBS: two rows per GPU).
## BEYOND=1 adds the paper's future work: the AdaConv + VAE rows and notebook 07 (kernel sizes).
## ENGINE=builtin runs the same plan with the hand-written driver instead of Snakemake.
# q: one value single-quoted for the shell; $(value X) keeps a value as typed (make would expand a $(...) in it), so
# a folder named x$(cmd) reaches the driver as that name and nothing is run
q = '$(subst ','"'"',$(1))'
v = $(value $(1))
# make would also expand these to put them in every recipe's environment (running a $(shell ...) in a value)
unexport PROFILE DATA DATA_DIR SEED SEEDS JOBS FORCE C0_SPACING GPUS BEYOND ENGINE T2_DIR REAL_DIR MIRROR
opt = $(if $(call v,$(2)),$(1) $(call q,$(call v,$(2))))
ARGS = $(call opt,--profile,PROFILE) $(call opt,--data,DATA) $(call opt,--seed,SEED) $(call opt,--jobs,JOBS) \
  $(call opt,--seeds,SEEDS) $(call opt,--data-dir,DATA_DIR) $(call opt,--c0-spacing,C0_SPACING) \
  $(call opt,--t2-dir,T2_DIR) $(call opt,--gpus,GPUS) $(if $(call v,BEYOND),--beyond)
CORES ?= $(shell $(PYTHON) -c "import os; print(os.cpu_count() or 1)")
## One make reproduce per output folder at a time (a second is refused); FORCE=1 also retrains every network.
reproduce: $(STAMP)
	$(BIN)/python -m cmr_lib.pipeline.reproduce $(ARGS) $(if $(call v,FORCE),--force) \
	  --engine $(if $(filter builtin,$(ENGINE)),builtin,snakemake) --cores $(call q,$(CORES))

## Unit and integration tests, the notebook pairing check and nbval of every notebook on the smoke profile. The
## tests run on one pytest-xdist worker per core with one thread each (TEST_JOBS=n to change; idle workers steal
## queued tests); beside them nbval runs the notebooks in order in one process (their cells share a kernel and
## 04-07 read what the earlier ones wrote, which xdist's scheduling would reorder). Its report follows the tests';
## both logs stay in build/nbval/ (tests.log ends with the 40 slowest tests).
TEST_JOBS ?= $(CORES)
test: $(STAMP)
	@rm -rf $(NBVAL) && mkdir -p $(NBVAL)
	@for nb in notebooks/*.ipynb; do \
	  $(BIN)/papermill --prepare-only -k python3 $$nb $(NBVAL)/$$(basename $$nb) \
	    -p profile smoke -p output_root $(CURDIR)/$(NBVAL)/out >/dev/null 2>$(NBVAL)/prepare.log \
	    || { cat $(NBVAL)/prepare.log; echo "papermill could not prepare $$nb"; exit 1; }; \
	done
	status=0; \
	( OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(NBVAL) --nbval-lax --nbval-current-env -p no:cacheprovider \
	  > $(NBVAL)/nbval.log 2>&1; echo $$? > $(NBVAL)/nbval.rc ) & \
	{ OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist worksteal tests -p no:cacheprovider \
	  --durations=40; echo $$? > $(NBVAL)/tests.rc; } 2>&1 | tee $(NBVAL)/tests.log; \
	test "$$(cat $(NBVAL)/tests.rc)" = 0 || status=1; \
	wait; echo "nbval of every notebook (smoke profile):"; cat $(NBVAL)/nbval.log; \
	test "$$(cat $(NBVAL)/nbval.rc)" = 0 || status=1; \
	exit $$status

## Fetch the real sample sets (MS-CMRSeg 2019 copy, MyoPS 2020 sample) into REAL_DIR (default data/real), online or
## from MIRROR=/a/folder laid out the same way; every file's SHA-256 is checked against params/real_data.tsv, and a
## file of yours already there under the same name is never replaced (FORCE=1 replaces it).
real-data: $(STAMP)
	$(BIN)/python -m cmr_lib.data.download $(call q,$(or $(call v,REAL_DIR),data/real)) $(call opt,--mirror,MIRROR) \
	  $(if $(call v,FORCE),--force)

## JupyterLab on the project's kernel (.venv or the active conda environment), opened at notebooks/ (as root too:
## containers and cloud notebooks run as root).
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(PORT),--port=$(PORT)) $(if $(filter 0,$(shell id -u)),--allow-root)

## The executed notebooks of the last make reproduce as a static site in build/book/ (open build/book/index.html):
## the course read without running it. PROFILE=/DATA= pick the run as for make reproduce.
book: $(STAMP)
	$(BIN)/python -m cmr_lib.report.book $(call opt,--profile,PROFILE) $(call opt,--data,DATA)

## The unit tests alone (tests/unit: no network trained, no notebook run; under a minute on 2 cores).
unit: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) tests/unit -p no:cacheprovider

## The integration tests alone: whole rows, notebooks, Snakemake, killed processes, the CLIs end to end.
integration: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) tests/integration -p no:cacheprovider

## Bring each notebook's pair in step (jupytext: the more recently edited file of the two wins; edit the .py).
sync: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.py

sync-check: sync
	git diff --exit-code -- notebooks

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build results/notebooks results/runs
