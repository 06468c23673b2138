# Thin wrapper over CMake. `make demo` and `make test` work on a fresh Debian 12 machine: each
# installs what it needs (scripts/install-deps), builds, and prepares the default corpus.
BUILD ?= build
JOBS ?= $(shell nproc)
# No "Entering directory" lines from the nested makes of the build.
MAKEFLAGS += --no-print-directory
CMAKE_FLAGS ?=
ifeq ($(CI),true)
  CMAKE_FLAGS += -DTANDEM_WERROR=ON
endif

.PHONY: all deps build data test demo bench fp8-compare format clean

all: build

deps:
	@scripts/install-deps

build: deps
	@mkdir -p $(BUILD)
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > $(BUILD)/configure.log 2>&1 \
	  || { cat $(BUILD)/configure.log; exit 1; }
	@cmake --build $(BUILD) -j $(JOBS)

data: deps
	@scripts/prepare-data

test: build data
	@scripts/python-test-env $(BUILD)/python-test-env
	cd $(BUILD) && ctest --output-on-failure

# The tiny MoE on 4 ranks: 2 pipeline stages (DualPipe) × 2 data-parallel ranks that split each
# MoE layer's experts (ep 2), the expert all-to-all overlapped with the other micro-batch's compute.
MPIRUN = mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS=1
DEMO_GRID = --set parallel.pp=2 --set parallel.ep=2 --set parallel.schedule=dualpipe \
  --set parallel.microbatches=4
# It runs under tandem-launch (no MPI: the ranks talk over UCX), checkpointing every 100 steps
# into $(BUILD)/demo-checkpoints, and is restarted from the newest checkpoint if a rank dies.
# Metrics, the live page and the control service are on while it trains (ports overridable).
DEMO_METRICS_PORT ?= 9400
DEMO_CONTROL_PORT ?= 29600
demo: build data
	@rm -rf $(BUILD)/demo-checkpoints $(BUILD)/demo-steps.jsonl
	@echo "demo: the tiny MoE on 4 ranks under tandem-launch (pp 2 x dp 2, DualPipe, ep 2), 600 steps."
	@echo "demo: while it trains, from another terminal:"
	@echo "  $(BUILD)/bin/tandemctl status        # also: watch, pause, resume, checkpoint, set-lr 1e-3, stop"
	@echo "  curl -s http://127.0.0.1:$(DEMO_METRICS_PORT)/metrics | grep '^tandem_loss'"
	@echo "  a browser on http://127.0.0.1:$(DEMO_METRICS_PORT)/status   # the live page"
	@UCX_TLS=tcp,self,sm $(BUILD)/bin/tandem-launch --nproc-per-node 4 --max-restarts 2 \
	  --log-dir $(BUILD)/demo-logs -- $(BUILD)/bin/tandem-train examples/configs/tiny.toml \
	  $(DEMO_GRID) --set checkpoint.dir=$(BUILD)/demo-checkpoints --set checkpoint.interval=100 \
	  --set monitoring.metrics_port=$(DEMO_METRICS_PORT) \
	  --set monitoring.sd_file=$(BUILD)/demo-targets.json \
	  --set control.port=$(DEMO_CONTROL_PORT) \
	  --summary-json $(BUILD)/demo-summary.json --trace $(BUILD)/demo-trace.json \
	  --log-jsonl $(BUILD)/demo-steps.jsonl

bench: build data
	$(BUILD)/bin/train_efficiency examples/configs/small.toml
	$(BUILD)/bin/fp8_throughput
	$(MPIRUN) -np 4 $(BUILD)/bin/comm_bandwidth
	$(MPIRUN) -np 4 $(BUILD)/bin/collectives_bandwidth
	bench/loopback_traffic.sh $(BUILD)
	$(MPIRUN) -np 2 $(BUILD)/bin/pipeline_schedules examples/configs/tiny.toml \
	  --set parallel.pp=2 --set parallel.microbatches=8 --schedules 1f1b,zb-h1,dualpipe,dualpipev
	$(MPIRUN) -np 4 $(BUILD)/bin/pipeline_schedules examples/configs/tiny.toml \
	  --set parallel.pp=4 --set parallel.microbatches=8 --schedules 1f1b,zb-h1,dualpipe
	$(MPIRUN) -np 4 $(BUILD)/bin/pipeline_schedules examples/configs/tiny.toml $(DEMO_GRID) \
	  --set parallel.microbatches=8 --overlap-compare
	$(BUILD)/bin/metrics_cost
	$(BUILD)/bin/metrics_cost 110 58 256
	bench/metrics_overhead.sh $(BUILD) 6 40

# FP8 vs FP32 training of tiny.toml over 5 seeds, with the fp32 reassociation control (dp 2): the
# mean paired difference of the final held-out loss with its 95% interval, and a plot.
fp8-compare: build data
	scripts/fp8-vs-fp32 examples/configs/tiny.toml $(BUILD)/fp8

format:
	@git ls-files --cached --others --exclude-standard '*.h' '*.cc' '*.cu' | xargs clang-format -i

clean:
	rm -rf $(BUILD)
