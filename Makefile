# bytechat: the commands a person runs. See README.md.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= smoke
NPROC   ?= 2
HOST    ?= 127.0.0.1
PORT    ?= 8000
CKPT    ?=
ARGS    ?=

export HF_DATASETS_OFFLINE ?=
export PYTHONUNBUFFERED := 1

.PHONY: setup test format smoke repro sweep chat serve bench new-user-check train-ddp clean help

help:
	@echo "make setup | test | format | smoke | new-user-check | sweep SET=... | chat CKPT=... | serve CKPT=... | bench | train-ddp NPROC=2 PROFILE=smoke"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# One venv with everything: torch pinned to 2.13.0 (CPU wheel here; see README for CUDA/Mac).
setup: $(BIN)/python
	$(BIN)/pip install -e ".[dev]"
	mkdir -p .roam-data
	@echo "setup done: activate with 'source $(VENV)/bin/activate'"

test:
	HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q $(ARGS)

# The one formatter (settings in pyproject.toml); the test suite checks it was run.
format:
	$(BIN)/ruff format .

# The whole pipeline with the small model: data stages, then train/eval/export smoke.
smoke:
	mkdir -p .roam-data
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro eval@smoke export@smoke index
	@$(BIN)/python -m bytechat.serve.chat_cli --summary smoke

repro:
	mkdir -p .roam-data
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# A sweep: one DVC experiment per combination of the SET values, each run in a temporary
# copy of the repo (your own runs in artifacts/ are never touched), then the table.
#   make sweep SET="profiles.smoke.train.lr=0.003,0.01 profiles.smoke.train.optimizer=adamw,muon"
# .roam-data is git-ignored, so it is copied in (-C); the data stages come from the cache.
SET ?=
# Columns the table leaves out (all stay in `dvc exp show`): training-time losses and
# rates, the compressors' figures, the finer chat metrics, and natural_test (kept for the
# end of a piece of work: a sweep must not choose by it). answer_f1 and its search-box
# baseline stay, per question set.
SWEEP_HIDE := '.*loss|lr|mfu|phase|bytes_per_s|.*step|.*bytes|.*(gzip|bz2|xz)_bpb|wiki_test.*|Created|chat\.natural_test\..*|chat\.everyday\..*|chat\..*(baseline_all_.*|contains|abstention.*|coverage|recall_at_3|stop_rate|questions)'
sweep:
	@test -n "$(SET)" || { echo 'make sweep: SET is empty (e.g. SET="profiles.smoke.train.lr=0.003,0.01")' >&2; exit 2; }
	mkdir -p .roam-data
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc exp run --queue -C .roam-data $(foreach s,$(SET),-S '$(s)') eval@$(PROFILE)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc exp run --run-all
	$(BIN)/dvc exp show --only-changed --drop $(SWEEP_HIDE)

chat:
	@$(BIN)/python -m bytechat.serve.chat_cli $(if $(CKPT),--ckpt "$(CKPT)") $(ARGS)

serve:
	$(BIN)/python -m bytechat.serve.web.cli --host $(HOST) --port $(PORT) $(if $(CKPT),--ckpt "$(CKPT)") $(ARGS)

# One profile on NPROC processes of this machine (DDP; gloo on CPU, nccl on GPUs). The data
# stages come from dvc first (nothing to do when the streams are current); the checkpoints
# land where train@PROFILE keeps them, so a later `dvc repro` finds the run trained.
# Several machines: run torchrun yourself (docs/ddp.md).
train-ddp:
	mkdir -p .roam-data
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro streams
	$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) stages/train.py --profile $(PROFILE) $(ARGS)

bench:
	$(BIN)/python -m tools.bench $(ARGS)

# make smoke in a temporary copy whose .roam-data is a graph the project never trains or
# tunes on (data/new-user-notes/), then its chat metrics beside the search box's and its small talk.
new-user-check:
	$(BIN)/python -m tools.new_user_check $(ARGS)

clean:
	rm -rf artifacts dvclive
