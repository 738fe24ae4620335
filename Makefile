# casegraph's entry points. CI calls `make test` (see .ci/run).
.PHONY: setup run test lint fmt bench validate model

CARGO ?= cargo

## Everything `run` and `test` need (scripts/setup.sh test); each target sets up only its own part.
setup:
	@scripts/setup.sh test

## The main job on the shipped defaults: validate the shipped workflows, run their fixtures
## and route + run the sample requests end to end.
run:
	@scripts/setup.sh run
	$(CARGO) build --release --locked
	./target/release/casegraph validate workflows
	./target/release/casegraph test workflows
	./target/release/casegraph run --input workflows/samples/requests.jsonl --verbose

## Every test: formatting, lints, the workspace's unit, integration, fixture and hostile-input
## tests, then the web console's browser tests (headless Chromium against the real server).
test:
	@scripts/setup.sh test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --workspace --locked
	scripts/browser-test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

validate:
	$(CARGO) run --quiet -- validate workflows

bench:
	$(CARGO) bench -p casegraph-engine --features onnx

## Retrain the intent model (not part of test/run; artefacts are committed). See models/README.md.
model:
	.venv-train/bin/python models/training/train.py
