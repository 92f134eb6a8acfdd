# Front door for people and CI. The real build is CMake; these targets wrap it.
#   make            build build/pgwarden
#   make check      unit + integration tests (installs missing packages first)
#   make check-sanitize   the same tests on an ASan+UBSan build
#   make demo       throwaway PostgreSQL with planted problems, then full-analysis
#   make fuzz-smoke build every libFuzzer target and run each briefly
#   make fuzz       every fuzz target for FUZZ_SECONDS (default 60), then its line coverage
#   make alloc-failure  pgwarden serve under load with failing allocations (about a minute)
#   make bench-manager  what the live manager costs: tps with it on vs off, side by side
#   make bench-reuseport  one and two processes on one port (so_reuseport) vs PgBouncer's
#   make soak       mixed workload for DURATION seconds (default 600), then a verdict
#   make format     clang-format every C file (except those listed in .clang-format-pending)
#   make format-check  fail, listing them, when C files under src/ and tests/ are not formatted
PYTHON ?= /usr/bin/python3
BUILD ?= build
SAN_BUILD ?= build-sanitize
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_ARGS ?=

.PHONY: all build setup check check-unit check-integration check-sanitize demo format format-check clean fuzz alloc-failure bench bench-quick bench-manager bench-reuseport fuzz-smoke soak soak-sanitize

all: build

setup:
	@scripts/setup

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPGWARDEN_WERROR=ON

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

check: setup
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory check-unit check-integration

check-unit:
	cd $(BUILD) && ctest --output-on-failure

check-integration:
	PGWARDEN_BIN=$(abspath $(BUILD))/pgwarden $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

$(SAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPGWARDEN_WERROR=ON -DPGWARDEN_SANITIZE=ON

check-sanitize: setup $(SAN_BUILD)/CMakeCache.txt
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  PGWARDEN_BIN=$(abspath $(SAN_BUILD))/pgwarden $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

demo: setup
	@$(MAKE) --no-print-directory build
	@$(PYTHON) scripts/demo.py --bin $(abspath $(BUILD))/pgwarden

bench: setup
	@$(MAKE) --no-print-directory build
	@bench/setup.sh
	@$(PYTHON) bench/run.py --pgwarden $(abspath $(BUILD))/pgwarden $(BENCH_ARGS)
	@$(PYTHON) bench/reuseport.py --pgwarden $(abspath $(BUILD))/pgwarden

# One and two processes on one port (so_reuseport), pgwarden next to PgBouncer.
bench-reuseport: setup
	@$(MAKE) --no-print-directory build
	@bench/setup.sh
	@$(PYTHON) bench/reuseport.py --pgwarden $(abspath $(BUILD))/pgwarden $(BENCH_ARGS)

bench-manager: setup
	@$(MAKE) --no-print-directory build
	@$(PYTHON) bench/manager_overhead.py --pgwarden $(abspath $(BUILD))/pgwarden $(BENCH_ARGS)

bench-quick: setup
	@$(MAKE) --no-print-directory build
	@bench/setup.sh
	@$(PYTHON) bench/run.py --quick --pgwarden $(abspath $(BUILD))/pgwarden $(BENCH_ARGS)

fuzz-smoke: setup
	@scripts/fuzz-smoke

FUZZ_SECONDS ?= 60
FAILALLOC_BUILD ?= build-failalloc
ALLOC_FAILURE_ARGS ?=
# An ASan + UBSan build whose own allocations fail on demand (src/common/failalloc.h).
alloc-failure: setup
	cmake -S . -B $(FAILALLOC_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPGWARDEN_WERROR=ON \
	  -DPGWARDEN_SANITIZE=ON -DPGWARDEN_FAILALLOC=ON >/dev/null
	cmake --build $(FAILALLOC_BUILD) -j $(JOBS) --target pgwarden
	$(PYTHON) tests/alloc_failure/run.py --bin $(abspath $(FAILALLOC_BUILD))/pgwarden $(ALLOC_FAILURE_ARGS)

fuzz: setup
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz

DURATION ?= 600
soak: setup
	@$(MAKE) --no-print-directory build
	@$(PYTHON) scripts/soak.py --bin $(abspath $(BUILD))/pgwarden --duration $(DURATION)

# The soak on the sanitizer build (CI runs a short one): memory errors and leaks under churn.
SOAK_SANITIZE_DURATION ?= 60
soak-sanitize: setup $(SAN_BUILD)/CMakeCache.txt
	cmake --build $(SAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(PYTHON) scripts/soak.py --bin $(abspath $(SAN_BUILD))/pgwarden --duration $(SOAK_SANITIZE_DURATION)

format:
	find src tests bench -name '*.[ch]' | grep -vxF -f .clang-format-pending | \
	  xargs -r clang-format -i

format-check: setup
	@scripts/format-check

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FAILALLOC_BUILD) build-fuzz-cov
